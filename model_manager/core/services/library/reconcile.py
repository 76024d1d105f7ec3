"""Recovery at start: finish or roll back the imports and deletes a crash left half done."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from model_manager.core.services.library import files
from model_manager.core.services.library.staging import STAGING_PREFIX
from model_manager.core.services.library.state import LibraryState
from model_manager.core.services.threads import in_thread_to_completion

logger = logging.getLogger("model_manager.local_storage")


class Reconciliation(LibraryState):
    """Brings MODELS_DIR and the catalogue back into agreement after a crash."""

    async def reconcile(self) -> None:
        """Finish or roll back what a crash left half done (see the `library` package docstring). Called once at start."""
        async with self._lock:
            await in_thread_to_completion(self._reconcile)

    def _reconcile(self) -> None:
        self._finish_deletes()
        if not self.models_dir.is_dir():
            logger.warning("MODELS_DIR %s does not exist; nothing to reconcile", self.models_dir)
            return
        with os.scandir(self.models_dir) as entries:
            stale = [e.path for e in entries if e.name.startswith(STAGING_PREFIX) and e.path not in self._staging]
        if stale:
            logger.info("removing %d staging file(s) of imports a crash interrupted", len(stale))
            files.remove_files(stale)
        records = self.catalogue.list_models(include_pending=True)
        unavailable = self._unavailable_folders(records)
        for record in records:
            if record.state != "pending" or Path(record.file_path).parent.as_posix() in unavailable:
                continue
            if self._files_complete(record):
                self.catalogue.mark_model_ready(record.model_id)
                logger.info("finished adding %s, interrupted after its files were in place", record.file_path)
            else:
                # Only the row goes: its files may be a person's own (a move, or a model registered in
                # place), so the rescan after the start adopts the valid ones and cleanup judges the rest.
                self.catalogue.delete_model(record.model_id)
                logger.info("rolled back adding %s, interrupted before its files were in place", record.file_path)
        missing = [r for r in records if r.state == "ready" and not self._files_present(r)]
        if missing:
            logger.warning(
                "%d model(s) have missing files (an unmounted drive?); they stay listed, and "
                "POST /local/storage/cleanup removes their entries: %s",
                len(missing), ", ".join(r.file_path for r in missing[:10]),
            )

    def _finish_deletes(self) -> None:
        """Remove the files of models deleted just before a crash, each only if it is still the file the
        delete noted (a file put at its path since is someone else's, and stays)."""
        doomed = self.catalogue.files_to_remove()
        if not doomed:
            return
        kept = files.remove_if_unchanged(doomed)
        self.catalogue.forget_files_to_remove(file.path for file in doomed)
        logger.info("finished deleting %d file(s) of models deleted before a crash", len(doomed) - len(kept))
        if kept:
            logger.warning("kept %d file(s) that changed since their model was deleted: %s", len(kept), ", ".join(kept))
