"""What every flow of the library shares: its folders, the catalogue, one lock, live staging files, files in use."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from pathlib import Path

from model_manager.core.catalogue import Catalogue, ModelRecord
from model_manager.core.config import Settings
from model_manager.core.errors import InsufficientStorageError
from model_manager.core.services.library import files
from model_manager.core.services.library.staging import StagingFile
from model_manager.core.services.threads import in_thread_to_completion

# Download states whose partial files a later run may still resume (DOWNLOADS_DIR/<download_id>/).
RESUMABLE_DOWNLOAD_STATES = ("pending", "downloading", "verifying", "failed")


class LibraryState:
    """The state of one library and the checks its flows share; `LocalStorage` combines the flows."""

    def __init__(self, settings: Settings, catalogue: Catalogue) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.models_dir = Path(os.path.abspath(settings.models_dir))
        self.downloads_dir = Path(os.path.abspath(settings.downloads_dir))
        self._data_dir = os.path.abspath(settings.data_dir)
        catalogue_file = os.path.abspath(settings.catalogue_file)
        # Files cleanup must never take, even when someone points MODEL_MANAGER_DATA_DIR at MODELS_DIR.
        self._protected = {os.path.abspath(settings.token_file)} | {
            catalogue_file + suffix for suffix in ("", "-wal", "-shm", "-journal")
        }
        self._lock = asyncio.Lock()
        self._staging: set[str] = set()
        self._in_use: Counter[str] = Counter()

    @staticmethod
    def _files_present(record: ModelRecord) -> bool:
        return all(files.regular_size(path) is not None for path in record.all_paths)

    @staticmethod
    def _files_complete(record: ModelRecord) -> bool:
        sizes = [files.regular_size(path) for path in record.all_paths]
        return None not in sizes and sum(sizes) == record.file_size_bytes

    def _unavailable_folders(self, records: list[ModelRecord]) -> set[str]:
        """Folders of ready models that are missing or empty: probably an unmounted drive, never a reason to forget them."""
        folders = {Path(path).parent.as_posix() for r in records if r.state == "ready" for path in r.all_paths}
        return {folder for folder in folders if not os.path.isdir(folder) or files.is_empty_dir(folder)}

    def _require_free_space(self, needed: int) -> None:
        free = shutil.disk_usage(self.models_dir).free
        if free < needed + files.FREE_SPACE_MARGIN_BYTES:
            raise InsufficientStorageError(
                f"not enough free disk in {self.models_dir}: {needed} bytes needed plus a margin of "
                f"{files.FREE_SPACE_MARGIN_BYTES}, {free} free; delete models or run POST /local/storage/cleanup",
                {"needed_bytes": needed, "free_bytes": free},
            )

    def _free_space_budget(self) -> int:
        """Bytes a new file may take in MODELS_DIR before only the safety margin would be left."""
        return shutil.disk_usage(self.models_dir).free - files.FREE_SPACE_MARGIN_BYTES

    @staticmethod
    def _raise_over_budget(received: int, budget: int) -> None:
        raise InsufficientStorageError(
            f"not enough free disk: the upload passed {received} bytes, and only {max(budget, 0)} may be used "
            f"while keeping {files.FREE_SPACE_MARGIN_BYTES} bytes free; delete models or run POST /local/storage/cleanup",
            {"received_bytes": received, "free_bytes_usable": max(budget, 0)},
        )

    async def _new_staging(self) -> StagingFile:
        return await asyncio.to_thread(StagingFile, self.models_dir, self._staging)

    async def _discard(self, staging: StagingFile | None) -> None:
        if staging is not None:
            await in_thread_to_completion(staging.discard)
