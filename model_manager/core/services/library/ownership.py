"""Who owns a file: the catalogue's rows, matched by file identity (device and inode), never by spelling.

A folder reached through a symlink, a relative path or a trailing slash names the same files; matching
rows and files as path strings made every file of a differently spelled MODELS_DIR look orphaned.
Blocking: call from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from model_manager.core.catalogue import ModelRecord
from model_manager.core.services.library import files
from model_manager.core.services.library.files import FileIdentity


@dataclass(frozen=True)
class OwnedFile:
    """A file of a catalogue row: the row, and where in its list of parts the file stands."""

    record: ModelRecord
    part_index: int

    @property
    def is_whole_model(self) -> bool:
        """Whether the file is the model's only file (not one part of a split model)."""
        return len(self.record.all_paths) == 1


class Ownership:
    """The files the catalogue's rows own, by identity, and the SHA-256 of every part of every model."""

    def __init__(self, records: list[ModelRecord]) -> None:
        self.records = records
        self._by_identity: dict[FileIdentity, OwnedFile] | None = None
        self.by_sha256: dict[str, ModelRecord] = {}
        for record in records:
            for digest in part_hashes(record):
                self.by_sha256.setdefault(digest, record)

    @property
    def by_identity(self) -> dict[FileIdentity, OwnedFile]:
        """Every file of every row that is on disk now, by identity (stat-ed on first use)."""
        if self._by_identity is None:
            self._by_identity = {}
            for record in self.records:
                for index, path in enumerate(record.all_paths):
                    key = files.identity(path)
                    if key is not None:
                        self._by_identity.setdefault(key, OwnedFile(record, index))
        return self._by_identity

    def owner_of(self, path: str) -> OwnedFile | None:
        """The row that owns the file at `path` (any spelling of it), or None."""
        key = files.identity(path)
        return self.by_identity.get(key) if key is not None else None

    def owns(self, key: FileIdentity) -> bool:
        return key in self.by_identity

    def model_with_bytes(self, sha256: str) -> ModelRecord | None:
        """The model holding a file (a whole model or any part of a split one) with this SHA-256."""
        return self.by_sha256.get(sha256)

    def model_with_files(self, hashes: list[str]) -> ModelRecord | None:
        """The model these files already are: for one file, any model holding its bytes; for a split
        model, the model whose parts have exactly these SHA-256s, in order (one part alone is not it)."""
        if len(hashes) == 1:
            return self.model_with_bytes(hashes[0])
        return next((record for record in self.records if file_hashes(record) == hashes), None)


def file_hashes(record: ModelRecord) -> list[str]:
    """The SHA-256 of each of the model's files, in order."""
    hashes = part_hashes(record)
    return hashes[1:] if len(record.all_paths) > 1 else hashes[:1]


def part_hashes(record: ModelRecord) -> list[str]:
    """The SHA-256 of each file of a model: its file hash, plus every part's for a split model."""
    hashes = [record.file_hash]
    for part in record.metadata.get("parts") or []:
        if isinstance(part, dict) and isinstance(part.get("sha256"), str):
            hashes.append(part["sha256"])
    return hashes
