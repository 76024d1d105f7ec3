"""`LocalStorage`, the library service: its flows combined, plus listing, deleting and marking files in use."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from model_manager.core.catalogue import ModelRecord, utc_now
from model_manager.core.errors import FileInUseError, ModelNotFoundError
from model_manager.core.models import LocalModel, LocalModelSort
from model_manager.core.services import open_files
from model_manager.core.services.library import files
from model_manager.core.services.library.cleanup import StatsAndCleanup
from model_manager.core.services.library.exports import Exports
from model_manager.core.services.library.importer import FileImports
from model_manager.core.services.library.reconcile import Reconciliation
from model_manager.core.services.library.records import find_projector, matches, projector_of, sort_models, to_api
from model_manager.core.services.threads import in_thread_to_completion
from model_manager.core.services.library.uploads import Uploads


class LocalStorage(Reconciliation, FileImports, Uploads, StatsAndCleanup, Exports):
    """The library of model files. Create one per process; every method is safe to call concurrently."""

    async def list_models(self, q: str | None = None, sort: LocalModelSort = LocalModelSort.imported) -> list[LocalModel]:
        """Ready models; `q` keeps those whose name, repo, file name or GGUF name contains it (any case).

        `sort`: imported (oldest first), name, size (largest first), last_accessed (most recent first).
        """
        records, exports = await asyncio.to_thread(lambda: (self.catalogue.list_models(), self.catalogue.list_exports()))
        by_model: dict[str, list] = {}
        for export in exports:
            by_model.setdefault(export.model_id, []).append(export)
        models = [
            to_api(record, by_model.get(record.model_id, ()), projector=projector_of(record, records)) for record in records
        ]
        if q:
            models = [model for model in models if matches(model, q.casefold())]
        return sort_models(models, sort)

    async def get_model(self, model_id: str, run_context: int | None = None) -> LocalModel:
        """The model, with `last_accessed` set to now; `run_context` is the context its llama.cpp run
        command asks for (default: its trained context, at most 8192). Raises `ModelNotFoundError`."""
        record = await asyncio.to_thread(self.catalogue.get_model, model_id)
        if record is None:
            raise ModelNotFoundError(f"no model with id {model_id} in the library", {"model_id": model_id})
        record.last_accessed = utc_now()
        await asyncio.to_thread(self.catalogue.touch_model, model_id, record.last_accessed)
        exports, projector = await asyncio.to_thread(
            lambda: (self.catalogue.list_exports(model_id), find_projector(self.catalogue, record))
        )
        return to_api(record, exports, run_context, projector)

    async def delete_model(self, model_id: str, force: bool = False) -> None:
        """Remove the model's row, then its files.

        Raises `ModelNotFoundError`, and `FileInUseError` while one of its files is being written or read
        by this service, or is open in another process on this machine (llama-server running it, say),
        unless `force`.
        """
        async with self._lock:
            record = await asyncio.to_thread(self.catalogue.get_model, model_id)
            if record is None:
                raise ModelNotFoundError(f"no model with id {model_id} in the library", {"model_id": model_id})
            if not force:
                await asyncio.to_thread(self._refuse_if_in_use, record)
            await in_thread_to_completion(self._remove_model, record)

    def _refuse_if_in_use(self, record: ModelRecord) -> None:
        busy = [path for path in record.all_paths if self.is_in_use(path)]
        if busy:
            raise FileInUseError(
                f"{Path(busy[0]).name} is still being written; try again when that is done, or pass force=true",
                {"model_id": record.model_id, "files": busy},
            )
        identities = {key: path for path in record.all_paths if (key := files.identity(path)) is not None}
        users = open_files.processes_using(identities)
        if users:
            key, holders = next(iter(users.items()))
            names = ", ".join(f"{user.command} (pid {user.pid})" for user in holders)
            raise FileInUseError(
                f"{Path(identities[key]).name} is open in {names}; stop it first, or pass force=true",
                {
                    "model_id": record.model_id,
                    "files": [identities[key] for key in users],
                    "processes": [{"pid": u.pid, "command": u.command} for found in users.values() for u in found],
                },
            )

    def _remove_model(self, record: ModelRecord) -> None:
        self._remove_all_exports(record)  # first, while their links can still be checked against our files
        # A model registered where it lies outside MODELS_DIR keeps its files. The others are noted with
        # the row's deletion, so a crash before they are gone finishes the delete at the next start.
        doomed = [] if record.external else files.as_they_are(record.all_paths)
        self.catalogue.delete_model(record.model_id, removing=doomed)
        if doomed:
            files.remove_if_unchanged(doomed)
            self.catalogue.forget_files_to_remove(file.path for file in doomed)

    def mark_in_use(self, path: str | os.PathLike[str]) -> None:
        """Mark a file as being written (or read) by someone, so deleting its model answers FILE_IN_USE."""
        self._in_use[os.path.abspath(path)] += 1

    def release(self, path: str | os.PathLike[str]) -> None:
        key = os.path.abspath(path)
        self._in_use[key] -= 1
        if self._in_use[key] <= 0:
            del self._in_use[key]

    @contextlib.contextmanager
    def in_use(self, path: str | os.PathLike[str]) -> Iterator[None]:
        self.mark_in_use(path)
        try:
            yield
        finally:
            self.release(path)

    def is_in_use(self, path: str | os.PathLike[str]) -> bool:
        return self._in_use.get(os.path.abspath(path), 0) > 0
