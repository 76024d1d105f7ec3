"""Storage stats and cleanup: what the library takes on disk, and removing what nothing owns."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from model_manager.core.catalogue import ModelRecord
from model_manager.core.models import CleanupResult, StorageStats
from model_manager.core.services.disk import nearest_existing
from model_manager.core.services.library import files
from model_manager.core.services.library.state import LibraryState, _in_thread_to_completion

logger = logging.getLogger("model_manager.local_storage")

# Download states whose partial files a later run may still resume (DOWNLOADS_DIR/<download_id>...).
RESUMABLE_DOWNLOAD_STATES = ("pending", "downloading", "verifying", "failed")
_GIB = 1024**3


class StatsAndCleanup(LibraryState):
    """Measures the library on disk; removes orphaned files, unowned partial downloads, rows whose files are gone."""

    async def storage_stats(self) -> StorageStats:
        """Sizes measured on disk, the disk holding MODELS_DIR, partial downloads, and unowned files."""
        async with self._lock:
            return await asyncio.to_thread(self._stats)

    def _stats(self) -> StorageStats:
        records = self.catalogue.list_models(include_pending=True)
        ready = [record for record in records if record.state == "ready"]
        sizes = [[files.regular_size(path) for path in record.all_paths] for record in ready]
        total = sum(size or 0 for record_sizes in sizes for size in record_sizes)
        missing = sum(1 for record_sizes in sizes if any(size is None for size in record_sizes))
        disk = shutil.disk_usage(nearest_existing(self.models_dir))
        return StorageStats(
            total_models=len(ready),
            total_count=len(ready),
            total_size_bytes=total,
            total_size_gb=round(total / _GIB, 3),
            disk_free_bytes=disk.free,
            available_bytes=disk.free,
            disk_free_gb=round(disk.free / _GIB, 3),
            disk_total_gb=round(disk.total / _GIB, 3),
            usage_percent=round((disk.total - disk.free) / disk.total * 100, 2) if disk.total else 0.0,
            storage_directory=str(self.models_dir),
            partial_downloads_bytes=files.tree_size(self.downloads_dir),
            orphaned_files=len(self._orphans(self._owned_paths(records))),
            models_with_missing_files=missing,
        )

    @staticmethod
    def _owned_paths(records: Iterable[ModelRecord]) -> set[str]:
        return {os.path.abspath(path) for record in records for path in record.all_paths}

    def _orphans(self, owned: set[str]) -> list[tuple[str, int]]:
        """Files (and links) directly in MODELS_DIR that no row owns, with their sizes; live staging files excluded."""
        if not self.models_dir.is_dir():
            return []
        found = []
        with os.scandir(self.models_dir) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) or entry.path in owned or entry.path in self._protected:
                    continue
                if entry.path in self._staging:  # an import in progress writes it
                    continue
                info = entry.stat(follow_symlinks=False)
                found.append((entry.path, info.st_size if stat.S_ISREG(info.st_mode) else 0))
        return found

    def _unowned_partials(self, kept_ids: set[str]) -> list[tuple[str, int]]:
        """Entries of DOWNLOADS_DIR whose name starts with no kept download id, with their sizes."""
        if not self.downloads_dir.is_dir() or self.downloads_dir == self.models_dir:
            return []
        guarded = [self._data_dir, str(self.models_dir)]
        found = []
        with os.scandir(self.downloads_dir) as entries:
            for entry in entries:
                if any(entry.name.startswith(download_id) for download_id in kept_ids):
                    continue
                if entry.path in self._protected or any(files.is_within(folder, entry.path) for folder in guarded):
                    continue
                found.append((entry.path, files.tree_size(entry.path)))
        return found

    async def cleanup(self, dry_run: bool = False, active_download_ids: Iterable[str] = frozenset()) -> CleanupResult:
        """Remove files in MODELS_DIR no row owns, partial downloads no active or resumable download owns,
        and rows whose files are gone (not when their folder is missing or empty: an unmounted drive).

        Never a registered model's file, never a live staging file, never through a link. `dry_run`
        lists the same and removes nothing.
        """
        async with self._lock:
            return await _in_thread_to_completion(self._cleanup, dry_run, set(active_download_ids))

    def _cleanup(self, dry_run: bool, active_download_ids: set[str]) -> CleanupResult:
        records = self.catalogue.list_models(include_pending=True)
        unavailable = self._unavailable_folders(records)
        broken = [r for r in records if r.state == "ready" and not self._files_present(r)]
        gone = [r for r in broken if not {Path(p).parent.as_posix() for p in r.all_paths} & unavailable]
        gone_ids = {record.model_id for record in gone}
        # The remaining parts of a split model whose other parts are gone become orphans with it.
        orphans = self._orphans(self._owned_paths(r for r in records if r.model_id not in gone_ids))
        resumable = self.catalogue.list_downloads(RESUMABLE_DOWNLOAD_STATES)
        partials = self._unowned_partials({job.download_id for job in resumable} | active_download_ids)

        removed: list[str] = [Path(record.file_path).name for record in gone]
        freed = 0
        if not dry_run:
            for record in gone:
                self.catalogue.delete_model(record.model_id)
        for path, size in orphans + partials:
            if not dry_run:
                try:
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
                except OSError:
                    logger.warning("cleanup could not remove %s", path, exc_info=True)
                    continue
            removed.append(os.path.basename(path))
            freed += size

        verb = "Would remove" if dry_run else "Removed"
        message = (
            f"{verb} {len(orphans)} orphaned file(s), {len(partials)} partial download(s) and "
            f"{len(gone)} catalogue entr{'y' if len(gone) == 1 else 'ies'} whose files are gone "
            f"({freed} bytes)."
        )
        if len(broken) > len(gone):
            message += (
                f" Kept {len(broken) - len(gone)} entr(ies) whose folder is missing or empty "
                f"({', '.join(sorted(unavailable))}): mount the drive, or delete them one by one."
            )
        if not dry_run and removed:
            logger.info("cleanup: %s", message)
        return CleanupResult(
            message=message, removed_files=removed, removed_count=len(removed), freed_bytes=freed, dry_run=dry_run
        )
