"""What an export needs to know about a library model, and names other tools accept."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_manager.core.catalogue import ModelRecord
from model_manager.core.services.library.ownership import part_hashes


@dataclass(frozen=True)
class ExportSource:
    """A library model as exports see it: its files in order, with their SHA-256 and sizes, and the
    multimodal projector that goes with it (a vision model), when the library holds one."""

    model_id: str
    display_name: str
    repo_id: str | None
    files: list[Path]
    sha256: list[str]
    sizes: list[int]
    metadata: dict[str, Any]
    projector: Path | None = None
    projector_sha256: str | None = None
    projector_size: int | None = None

    @classmethod
    def of(cls, record: ModelRecord, projector: ModelRecord | None = None) -> ExportSource:
        """The export view of `record`; `projector` is its projector model (left out when its file is missing)."""
        paths = [Path(path) for path in record.all_paths]
        parts = record.metadata.get("parts") or []
        sizes = [part["size_bytes"] for part in parts] if len(parts) == len(paths) else [record.file_size_bytes]
        hashes = part_hashes(record)
        return cls(
            model_id=record.model_id,
            display_name=record.display_name,
            repo_id=record.original_repo_id,
            files=paths,
            sha256=hashes[1:] if len(paths) > 1 else hashes[:1],
            sizes=sizes,
            metadata=record.metadata,
            projector=Path(projector.file_path) if projector is not None and Path(projector.file_path).is_file() else None,
            projector_sha256=projector.file_hash if projector is not None else None,
            projector_size=projector.file_size_bytes if projector is not None else None,
        )

    @property
    def is_split(self) -> bool:
        return len(self.files) > 1


def slug(text: str, allowed: str = r"a-z0-9._-") -> str:
    """`text` in lower case with runs of anything outside `allowed` turned into one '-'."""
    value = re.sub(rf"[^{allowed}]+", "-", text.casefold()).strip("-._")
    return value[:80] or "model"


def repo_or_local_name(source: ExportSource) -> str:
    """`org/name`: the Hub repo the model came from, else `local/<its name>` (LM Studio and the HF cache)."""
    if source.repo_id and "/" in source.repo_id:
        return source.repo_id
    return f"local/{slug(source.display_name, r'a-zA-Z0-9._-')}"
