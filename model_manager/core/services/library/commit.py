"""The commit step: dedupe check, naming, pending row, renames and ready mark, as one step under the lock.

Steps 2 to 4 of the crash-safety order described in the `library` package docstring.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

from model_manager.core.catalogue import ModelRecord, utc_now
from model_manager.core.services.library import files
from model_manager.core.services.library.staging import Incoming
from model_manager.core.services.library.state import LibraryState, _in_thread_to_completion

logger = logging.getLogger("model_manager.local_storage")


@dataclass
class NewModel:
    """What the row of a model being added says besides its files."""

    display_name: str
    metadata: dict[str, Any]
    original_repo_id: str | None = None
    is_downloaded: bool = False


class CommitStep(LibraryState):
    """Adds checked files to the library as one model: imports, uploads and downloads all end here."""

    def _ready_model_with_hash(self, sha256: str) -> ModelRecord | None:
        record = self.catalogue.find_model_by_hash(sha256)
        return record if record is not None and record.state == "ready" else None

    async def _register(self, items: list[Incoming], new_model: NewModel) -> tuple[ModelRecord, bool]:
        async with self._lock:
            return await _in_thread_to_completion(self._commit, items, new_model)

    def _commit(self, items: list[Incoming], new_model: NewModel) -> tuple[ModelRecord, bool]:
        """Steps 2 to 4 of the `library` package docstring, with the dedupe check; runs under the lock, in a thread.

        Returns `(record, created)`. On a duplicate the staged files are removed, a client's file is left.
        On failure every file renamed so far goes back where it came from and the row is deleted.
        """
        existing = self.catalogue.find_model_by_hash(items[0].sha256)
        if existing is not None and existing.state == "ready":
            self._discard_staged(items)
            return existing, False
        if existing is not None:  # pending rows exist only inside this step, so this one is a crash's leftover
            self.catalogue.delete_model(existing.model_id)
        finals = [self.models_dir / name for name in self._free_names([item.name for item in items])]
        metadata = new_model.metadata
        if len(items) > 1:
            metadata = {
                **metadata,
                "parts": [
                    {"filename": final.name, "sha256": item.sha256, "size_bytes": item.size_bytes}
                    for item, final in zip(items, finals)
                ],
            }
        record = ModelRecord(
            model_id=str(uuid4()),
            state="pending",
            display_name=new_model.display_name,
            file_path=str(finals[0]),
            part_paths=[str(final) for final in finals] if len(finals) > 1 else [],
            file_size_bytes=sum(item.size_bytes for item in items),
            file_hash=items[0].sha256,
            imported_at=utc_now(),
            original_repo_id=new_model.original_repo_id,
            metadata=metadata,
            is_downloaded=new_model.is_downloaded,
        )
        try:
            self.catalogue.insert_model(record)
        except sqlite3.IntegrityError:
            existing = self._ready_model_with_hash(items[0].sha256)
            if existing is None:
                raise
            self._discard_staged(items)
            return existing, False
        moved: list[tuple[Incoming, Path]] = []
        try:
            for item, final in zip(items, finals):
                os.replace(item.source, final)
                moved.append((item, final))
                if item.unchanged_since is not None and not files.same_file(os.stat(final), item.unchanged_since):
                    raise files.changed_error(item.name)
            for folder in {self.models_dir} | {item.source.parent for item in items}:
                files.fsync_dir(folder)
            self.catalogue.mark_model_ready(record.model_id)
        except BaseException:
            for item, final in reversed(moved):
                try:
                    os.replace(final, item.source)
                except OSError:
                    logger.exception("could not move %s back to %s", final, item.source)
            with contextlib.suppress(Exception):
                self.catalogue.delete_model(record.model_id)
            self._discard_staged(items)
            raise
        for item in items:
            if item.staging is not None:
                item.staging.placed()
        record.state = "ready"
        return record, True

    @staticmethod
    def _discard_staged(items: list[Incoming]) -> None:
        for item in items:
            if item.staging is not None:
                item.staging.discard()

    def _free_names(self, wanted: list[str]) -> list[str]:
        """`wanted`, or the first numbered variant of all of them that neither a file nor a row uses."""
        taken = {name.casefold() for name in os.listdir(self.models_dir)}
        for record in self.catalogue.list_models(include_pending=True):
            taken.update(Path(path).name.casefold() for path in record.all_paths)
        for number in itertools.count(1):
            names = [files.numbered(name, number) for name in wanted]
            if not any(name.casefold() in taken for name in names):
                return names
        raise AssertionError("unreachable")
