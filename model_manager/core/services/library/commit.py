"""The commit step: dedupe check, naming, pending row, renames and ready mark, as one step under the lock.

Steps 2 to 4 of the crash-safety order described in the `library` package docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

from model_manager.core.catalogue import ModelRecord, utc_now
from model_manager.core.services.library import files
from model_manager.core.services.library.ownership import Ownership
from model_manager.core.services.library.staging import Incoming
from model_manager.core.services.library.state import LibraryState
from model_manager.core.services.threads import in_thread_to_completion

logger = logging.getLogger("model_manager.local_storage")

_NAME_ATTEMPTS = 5  # a name taken between choosing it and the rename is chosen again this many times


@dataclass
class NewModel:
    """What the row of a model being added says besides its files."""

    display_name: str
    metadata: dict[str, Any]
    original_repo_id: str | None = None
    is_downloaded: bool = False
    external: bool = False  # its files stay where they are, outside MODELS_DIR, and are never removed by us


class CommitStep(LibraryState):
    """Adds checked files to the library as one model: imports, uploads and downloads all end here."""

    def _ready_model_with_files(self, hashes: list[str]) -> ModelRecord | None:
        """The ready model these files already are (`Ownership.model_with_files`), or None."""
        return Ownership(self.catalogue.list_models()).model_with_files(hashes)

    async def find_model_with_files(self, hashes: list[str]) -> ModelRecord | None:
        """The ready model that files with these SHA-256s (in order) already are, or None."""
        return await asyncio.to_thread(self._ready_model_with_files, hashes)

    async def _register(self, items: list[Incoming], new_model: NewModel) -> tuple[ModelRecord, bool]:
        async with self._lock:
            return await in_thread_to_completion(self._commit, items, new_model)

    def _commit(self, items: list[Incoming], new_model: NewModel) -> tuple[ModelRecord, bool]:
        """Steps 2 to 4 of the `library` package docstring, with the dedupe check; runs under the lock, in a thread.

        Returns `(record, created)`. When the files already are a model (one file: any model holding its
        bytes; a split model: the model with exactly these parts), that model and False: staged files are
        removed, a client's file is left. On failure
        every file renamed so far goes back where it came from and the row is deleted. A name taken
        between choosing it and the rename (someone else's new file) is never replaced: another is chosen.
        """
        for attempt in range(_NAME_ATTEMPTS):
            ownership = Ownership(self.catalogue.list_models(include_pending=True))
            existing = ownership.model_with_files([item.sha256 for item in items])
            if existing is not None and existing.state == "ready":
                self._discard_staged(items)
                return existing, False
            if existing is not None:  # pending rows exist only inside this step: a crash's leftover
                self.catalogue.delete_model(existing.model_id)
            try:
                return self._add(items, new_model, ownership.records), True
            except FileExistsError:
                if attempt == _NAME_ATTEMPTS - 1:
                    self._discard_staged(items)
                    raise
                logger.info("a file appeared under the chosen name; choosing another")
        raise AssertionError("unreachable")

    def _add(self, items: list[Incoming], new_model: NewModel, records: list[ModelRecord]) -> ModelRecord:
        """Insert the pending row, put each file in place without replacing any, and mark the row ready.

        Raises FileExistsError, with everything undone, when a chosen name was taken meanwhile; on any
        other failure undoes everything, discards staged files and raises.
        """
        moving = [item for item in items if not item.in_place]
        names = iter(self._free_names([item.name for item in moving], records))
        finals = [item.source if item.in_place else self.models_dir / next(names) for item in items]
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
            external=new_model.external,
        )
        try:
            self.catalogue.insert_model(record)
        except BaseException:
            self._discard_staged(items)
            raise
        moved: list[tuple[Incoming, Path]] = []
        try:
            for item, final in zip(items, finals):
                if item.in_place:
                    if item.unchanged_since is not None and not files.same_file(os.stat(final), item.unchanged_since):
                        raise files.changed_error(item.name)
                    continue
                if item.link:
                    os.link(item.source, final, follow_symlinks=False)  # never replaces: EEXIST instead
                else:
                    files.rename_no_replace(item.source, final)
                moved.append((item, final))
                if item.unchanged_since is not None and not files.same_file(os.stat(final), item.unchanged_since):
                    raise files.changed_error(item.name)
            for folder in {self.models_dir} | {item.source.parent for item in moving if not item.link}:
                files.fsync_dir(folder)
            self.catalogue.mark_model_ready(record.model_id)
        except BaseException as error:
            for item, final in reversed(moved):
                try:
                    if item.link:
                        there, source = os.lstat(final), os.stat(item.source)
                        if (there.st_dev, there.st_ino) == (source.st_dev, source.st_ino):
                            os.unlink(final)  # still our own link; the source keeps its name
                    else:
                        files.rename_no_replace(final, item.source)
                except OSError:
                    logger.exception("could not move %s back to %s", final, item.source)
            with contextlib.suppress(Exception):
                self.catalogue.delete_model(record.model_id)
            if not isinstance(error, FileExistsError):
                self._discard_staged(items)
            raise
        for item in items:
            if item.staging is not None:
                item.staging.placed()
        record.state = "ready"
        return record

    @staticmethod
    def _discard_staged(items: list[Incoming]) -> None:
        for item in items:
            if item.staging is not None:
                item.staging.discard()

    def _free_names(self, wanted: list[str], records: list[ModelRecord]) -> list[str]:
        """`wanted`, or the first numbered variant of all of them that neither a file nor a row uses.

        Names are compared as a case-insensitive, Unicode-normalising filesystem would (`files.name_key`),
        and two wanted names that are the same that way (files of one variant from two folders) differ.
        """
        taken = {files.name_key(name) for name in os.listdir(self.models_dir)}
        for record in records:
            taken.update(files.name_key(Path(path).name) for path in record.all_paths)
        chosen: list[str] = []
        for name in wanted:
            for number in itertools.count(1):
                candidate = files.numbered(name, number)
                if files.name_key(candidate) not in taken:
                    break
            taken.add(files.name_key(candidate))
            chosen.append(candidate)
        return chosen
