"""llama.cpp's own download cache: `LLAMA_CACHE`, else `~/.cache/llama.cpp`.

The older flat layout keeps `<org>_<repo>_<file>.gguf` files with `.etag` sidecars, and for `-hf org/repo:tag`
a `manifest=<org>=<repo>=<tag>.json` naming the file (`ggufFile.rfilename`) and its projector
(`mmprojFile.rfilename`); that manifest is where the repo and tag come from. Newer llama.cpp writes the
Hugging Face cache layout (`models--org--name/`), which may sit in LLAMA_CACHE too: those are read as a
Hugging Face cache. An `.etag` is not used as the SHA-256: it is not always one. Blocking: call from a thread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from model_manager.core.services.discovery import hf_cache
from model_manager.core.services.discovery.found import Candidate, Findings, gguf_entries, group_models, is_folder, read_folder

TOOL = "llama.cpp"
MANIFEST_PREFIX = "manifest="
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the Hub's answer for one tag: a few KB


def cache_root(env: Mapping[str, str], home: Path) -> Path:
    """llama.cpp's cache folder: `LLAMA_CACHE`, else `~/.cache/llama.cpp`."""
    return Path(env["LLAMA_CACHE"]).expanduser() if env.get("LLAMA_CACHE") else home / ".cache" / "llama.cpp"


@dataclass(frozen=True)
class _Pulled:
    """What a `manifest=` file says about one cached file: the repo and tag it was pulled as, and its projector."""

    repo_id: str
    tag: str
    projector: str | None  # the projector's cached file name


def find(root: Path, findings: Findings) -> None:
    """Add the models of the flat cache in the folder `root`, and of any Hugging Face cache layout inside it."""
    entries = read_folder(root, TOOL, findings)
    if entries is None:
        return
    pulled = _read_manifests(entries, findings)
    grouped = group_models(gguf_entries(entries), TOOL, findings)
    for paths in grouped.models:
        origin = pulled.get(paths[0].name)
        projector = root / origin.projector if origin and origin.projector else None
        findings.candidates.append(
            Candidate(
                tool=TOOL,
                name=f"{origin.repo_id}:{origin.tag}" if origin else paths[0].name,
                paths=paths,
                library_name=paths[0].name,
                repo_id=origin.repo_id if origin else None,
                projector=projector if projector and projector.exists() else None,
                quantization_hint=origin.tag if origin else None,
            )
        )
    for entry in entries:
        if entry.name.startswith(hf_cache.REPO_PREFIX) and is_folder(entry):
            hf_cache.find_in_repo(Path(entry.path), findings, TOOL)


def cached_name(repo_id: str, rfilename: str) -> str:
    """The flat cache's name for a repo file: `org_repo_file.gguf` (every `/` made `_`)."""
    return f"{repo_id}_{rfilename}".replace("/", "_")


def _read_manifests(entries, findings: Findings) -> dict[str, _Pulled]:
    """Cached file name → where it was pulled from, from every readable `manifest=org=repo=tag.json`."""
    pulled: dict[str, _Pulled] = {}
    for entry in entries:
        if not (entry.name.startswith(MANIFEST_PREFIX) and entry.name.endswith(".json")):
            continue
        parts = entry.name[len(MANIFEST_PREFIX) : -len(".json")].split("=")
        if len(parts) != 3:
            continue
        org, repo, tag = parts
        try:
            with open(entry.path, "rb") as file:
                manifest = json.loads(file.read(MAX_MANIFEST_BYTES))
            rfilename = manifest["ggufFile"]["rfilename"]
            projector = (manifest.get("mmprojFile") or {}).get("rfilename")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            findings.skip(TOOL, entry.path, f"broken manifest, ignored: {error}")
            continue
        if not isinstance(rfilename, str):
            continue
        repo_id = f"{org}/{repo}"
        pulled[cached_name(repo_id, rfilename)] = _Pulled(
            repo_id, tag, cached_name(repo_id, projector) if isinstance(projector, str) else None
        )
    return pulled
