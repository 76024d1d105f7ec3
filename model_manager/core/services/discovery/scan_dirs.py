"""The folders of `LIBRARY_SCAN_DIRS` (+): any `.gguf` below them, split sets grouped, projectors beside.

Links to folders are not followed (a link loop must not hang discovery) and the walk stops at a fixed
depth; the service's own storage folders are left out. Blocking: call from a worker thread.
"""

from __future__ import annotations

import os
from pathlib import Path

from model_manager.core.services.discovery.found import Candidate, Findings, gguf_entries, group_models, pick_projector, read_folder

TOOL = "folder"
MAX_DEPTH = 6


def find(root: Path, findings: Findings, excluded: list[Path]) -> None:
    """Add every GGUF model below the folder `root`, except in the folders `excluded` (real paths)."""
    _find_in_folder(root, root, findings, [str(folder) for folder in excluded], depth=0)


def _find_in_folder(root: Path, folder: Path, findings: Findings, excluded: list[str], depth: int) -> None:
    if os.path.realpath(folder) in excluded:
        return
    entries = read_folder(folder, TOOL, findings)
    if entries is None:
        return
    grouped = group_models(gguf_entries(entries), TOOL, findings)
    projector = pick_projector(grouped.projectors)
    for paths in grouped.models:
        findings.candidates.append(
            Candidate(
                tool=TOOL,
                name=paths[0].relative_to(root).as_posix(),
                paths=paths,
                library_name=paths[0].name,
                projector=projector,
            )
        )
    if depth < MAX_DEPTH:
        for entry in entries:
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                _find_in_folder(root, Path(entry.path), findings, excluded, depth + 1)
