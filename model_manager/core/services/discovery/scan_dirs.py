"""The folders of `LIBRARY_SCAN_DIRS` (+): any `.gguf` below them, split sets grouped, projectors beside.

Links to folders are not followed (a link loop must not hang discovery) and the walk stops at a fixed
depth; the service's own storage folders are left out. Blocking: call from a worker thread.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from model_manager.core.services.discovery.found import Findings, add_models_below

TOOL = "folder"
MAX_DEPTH = 6


def find(root: Path, findings: Findings, excluded: Collection[str]) -> None:
    """Add every GGUF model below the folder `root`, except in the folders `excluded` (real paths)."""
    add_models_below(
        root,
        TOOL,
        findings,
        lambda paths: {"name": paths[0].relative_to(root).as_posix()},
        max_depth=MAX_DEPTH,
        excluded=excluded,
    )
