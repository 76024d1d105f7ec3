"""The Hugging Face cache: `models--<org>--<name>/blobs/<sha256>` (a link to our file),
`snapshots/<commit>/<file>` (a relative symlink to the blob) and `refs/main` (the commit). A vision model's
projector (`mmproj-*.gguf`) gets a blob and a snapshot file the same way.

`huggingface_hub` with `local_files_only=True` and llama.cpp's `-hf` then find the model offline. Blobs
of LFS files are named by their SHA-256, so bytes the cache already holds are used as they are. A
`refs/main` that names another commit (the person's own download) is never changed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from model_manager.core.errors import FileInUseError, InvalidFileError
from model_manager.core.services import tool_homes
from model_manager.core.services.exports.links import (
    Placed,
    identity_of,
    link_file,
    remove_if_ours,
    remove_projector_link,
    write_new_file,
)
from model_manager.core.services.exports.source import ExportSource, repo_or_local_name

TARGET = "hf-cache"


def default_name(source: ExportSource) -> str:
    """The Hub repo the model came from, else `local/<name>`."""
    return repo_or_local_name(source)


def snapshot_commit(source: ExportSource) -> str:
    """A stable 40-hex revision for our snapshot, derived from the model's bytes."""
    return hashlib.sha1(("model-manager:" + ":".join(source.sha256)).encode()).hexdigest()


def repo_folder(name: str) -> Path:
    org, _, repo = name.partition("/")
    if not org or not repo or "/" in repo or any(part in (".", "..") for part in (org, repo)):
        raise InvalidFileError(f"a Hugging Face repo id is org/name, not {name!r}", {"name": name})
    return tool_homes.hf_hub_cache() / f"models--{org}--{repo}"


def place(source: ExportSource, name: str, placed: Placed) -> dict:
    folder = repo_folder(name)
    commit = snapshot_commit(source)
    files = list(zip(source.files, source.sha256))
    if source.projector is not None:
        files.append((source.projector, source.projector_sha256))
    projector = None
    for model_file, digest in files:
        blob = folder / "blobs" / digest
        if blob.exists() and not blob.is_symlink() and blob.stat().st_size == model_file.stat().st_size:
            if model_file == source.projector and blob.samefile(model_file):
                projector = {**identity_of(model_file), "link": str(blob)}  # ours, from an earlier export
            placed.note_method("existing")  # the cache's own copy of these bytes (a blob's name is its SHA-256)
        else:
            link_file(model_file, blob, placed)
            if model_file == source.projector:
                projector = {**identity_of(model_file), "link": str(blob)}
        snapshot = folder / "snapshots" / commit / model_file.name
        _symlink_to_blob(snapshot, blob, placed)
    ref = folder / "refs" / "main"
    revision = "main"
    try:
        write_new_file(ref, commit.encode(), placed)
    except FileInUseError:
        revision = commit
        placed.notes.append(f"refs/main of {name} names another commit and was kept; use revision {commit}")
    first = source.files[0].name
    details = {
        "repo_id": name,
        "revision": revision,
        "commit": commit,
        "folder": str(folder),
        "run": f"llama-server -hf {name}",
        "python": f"hf_hub_download({name!r}, {first!r}, local_files_only=True)",
    }
    if projector is not None:
        details["projector"] = projector
    return details


def _symlink_to_blob(snapshot: Path, blob: Path, placed: Placed) -> None:
    placed.make_parent(snapshot)
    relative = os.path.relpath(blob, snapshot.parent)
    if snapshot.is_symlink() and os.readlink(snapshot) == relative:
        return
    try:
        os.symlink(relative, snapshot)
    except FileExistsError:
        raise FileInUseError(f"{snapshot} already exists and is not this model; it was left alone", {"path": str(snapshot)}) from None
    placed.created.append(str(snapshot))


def remove(source: ExportSource, created: list[str], details: dict) -> None:
    """Remove our snapshot links, our blob links that no other snapshot uses, and refs/main if still ours."""
    folder = Path(details["folder"])
    commit = details.get("commit", "")
    projector_blob = (details.get("projector") or {}).get("link")
    ours = {*source.sha256, source.projector_sha256, Path(projector_blob).name if projector_blob else None}
    for path in map(Path, created):
        # Only while it still is our link: a symlink into this repo's blobs, named by one of our hashes.
        if path.parent.parent.name == "snapshots" and path.is_symlink() and Path(os.readlink(path)).name in ours:
            path.unlink()
    used = {os.path.realpath(p) for p in (folder / "snapshots").rglob("*") if p.is_symlink()}
    projector_link = (details.get("projector") or {}).get("link")
    if projector_link:  # checked against what we linked: the projector model may be gone
        remove_projector_link(details, still_used=os.path.realpath(projector_link) in used)
    for path in map(Path, created):
        if str(path) == projector_link:
            continue
        if path.parent.name == "blobs" and os.path.realpath(path) not in used:
            owner = next((f for f, d in zip(source.files, source.sha256) if d == path.name), source.files[0])
            remove_if_ours(path, owner)
        elif path.parent.name == "refs":
            remove_if_ours(path, content=commit.encode())
