"""LM Studio: `<home>/models/<publisher>/<repo>/<file>.gguf`, a link to our file (every part of a split model),
and the projector (`mmproj-*.gguf`) linked beside it for a vision model, which is where LM Studio looks for it."""

from __future__ import annotations

from pathlib import Path

from model_manager.core.errors import InvalidFileError
from model_manager.core.services import tool_homes
from model_manager.core.services.exports.links import (
    Placed,
    identity_of,
    link_file,
    remove_if_ours,
    remove_projector_link,
)
from model_manager.core.services.exports.source import ExportSource, repo_or_local_name

TARGET = "lmstudio"


def default_name(source: ExportSource) -> str:
    """`publisher/repo` as LM Studio lists it: the Hub repo the model came from, else `local/<name>`."""
    return repo_or_local_name(source)


def place(source: ExportSource, name: str, placed: Placed) -> dict:
    publisher, _, repo = name.partition("/")
    if not publisher or not repo or "/" in repo or any(part in ("", ".", "..") for part in (publisher, repo)):
        raise InvalidFileError(f"an LM Studio name is publisher/repo, not {name!r}", {"name": name})
    folder = tool_homes.lmstudio_home() / "models" / publisher / repo
    for model_file in source.files:
        link_file(model_file, folder / model_file.name, placed)
    details = {"folder": str(folder), "load": f"lms load {name}"}
    if source.projector is not None:  # ours, made now or by the export of another variant: recorded either way
        link = folder / source.projector.name
        link_file(source.projector, link, placed)
        details["projector"] = {**identity_of(source.projector), "link": str(link)}
    return details


def remove(source: ExportSource, created: list[str], details: dict) -> None:
    projector_link = (details.get("projector") or {}).get("link")
    if projector_link:  # checked against what we linked: the projector model may be gone
        remove_projector_link(details)
    for path in map(Path, created):
        if str(path) == projector_link:
            continue
        owner = next((f for f in source.files if f.name == path.name), source.files[0])
        remove_if_ours(path, owner)
