"""The Hugging Face cache: `models--<org>--<name>/snapshots/<commit>/**.gguf`, symlinks into `blobs/`.

The root is `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. A blob of an LFS file is
named by its SHA-256, so the library can tell it holds the same bytes without reading them. A file that
several snapshots share is listed once (the facade merges files by identity). Blocking: call from a thread.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from model_manager.core.services.discovery.found import Findings, add_models_below, is_folder, is_folder_path, read_folder

TOOL = "hf-cache"
REPO_PREFIX = "models--"
MAX_DEPTH = 6  # folders inside a snapshot (repos keep quantizations in a folder or two)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def cache_root(env: Mapping[str, str], home: Path) -> Path:
    """The hub cache folder: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return home / ".cache" / "huggingface" / "hub"


def find(root: Path, findings: Findings, tool: str = TOOL) -> None:
    """Add the GGUF models of every model repo cached below the folder `root` (`tool`: who keeps this cache)."""
    for entry in read_folder(root, tool, findings) or []:
        if entry.name.startswith(REPO_PREFIX) and is_folder(entry):
            find_in_repo(Path(entry.path), findings, tool)


def repo_id_of(folder_name: str) -> str:
    """`models--org--name` → `org/name` (the Hub allows no `--` inside a name)."""
    return folder_name.removeprefix(REPO_PREFIX).replace("--", "/")


def find_in_repo(repo_folder: Path, findings: Findings, tool: str = TOOL) -> None:
    """Add the models of every snapshot of one cached repo."""
    snapshots = repo_folder / "snapshots"
    if not is_folder_path(snapshots, tool, findings):
        return
    repo_id = repo_id_of(repo_folder.name)
    for snapshot in read_folder(snapshots, tool, findings) or []:
        if is_folder(snapshot) and not snapshot.name.startswith("."):
            folder = Path(snapshot.path)
            add_models_below(folder, tool, findings, partial(_describe, repo_id, folder), max_depth=MAX_DEPTH)


def _describe(repo_id: str, snapshot: Path, paths: list[Path]) -> dict[str, str | None]:
    in_repo = paths[0].relative_to(snapshot).as_posix()
    return {"name": f"{repo_id}/{in_repo}", "repo_id": repo_id, "sha256": blob_sha256(paths[0])}


def blob_sha256(path: Path) -> str | None:
    """The SHA-256 a snapshot file's blob is named by: set for a link to `blobs/<64 hex>` (an LFS file), else None."""
    try:
        target = Path(os.path.realpath(path))
    except (OSError, ValueError):
        return None
    if target.parent.name == "blobs" and _SHA256.match(target.name):
        return target.name
    return None
