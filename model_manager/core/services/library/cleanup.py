"""Storage stats and cleanup: what the library takes on disk, and removing what nothing owns."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from model_manager.core.models import CleanupResult, StorageStats
from model_manager.core.services.disk import nearest_existing
from model_manager.core.services.library import files
from model_manager.core.services.library.adoption import Adoption
from model_manager.core.services.library.state import RESUMABLE_DOWNLOAD_STATES  # noqa: F401
from model_manager.core.services.threads import in_thread_to_completion

logger = logging.getLogger("model_manager.local_storage")

_GIB = 1024**3


class StatsAndCleanup(Adoption):
    """Measures the library on disk; removes what is provably the service's junk, adopts unregistered models."""

    async def storage_stats(self) -> StorageStats:
        """Sizes measured on disk, the disk holding MODELS_DIR, partial downloads, junk and unregistered models."""
        async with self._lock:
            return await asyncio.to_thread(self._stats)

    def _stats(self) -> StorageStats:
        records = self.catalogue.list_models(include_pending=True)
        ready = [record for record in records if record.state == "ready"]
        sizes = [[files.regular_size(path) for path in record.all_paths] for record in ready]
        total = sum(size or 0 for record_sizes in sizes for size in record_sizes)
        missing = sum(1 for record_sizes in sizes if any(size is None for size in record_sizes))
        disk = shutil.disk_usage(nearest_existing(self.models_dir))
        found = self._survey()
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
            partial_downloads_bytes=sum(files.tree_size(path) for path in self._download_folders()),
            orphaned_files=len(found.junk),
            models_with_missing_files=missing,
            unregistered_models=len(found.unregistered),
        )

    def _download_folders(self) -> list[str]:
        """Our partial-download folders in DOWNLOADS_DIR, live or not (never the user's files there)."""
        if not self.downloads_dir.is_dir():
            return []
        known = {job.download_id for job in self.catalogue.list_downloads()}
        return [
            entry.path for entry in os.scandir(self.downloads_dir)
            if entry.name in known and entry.is_dir(follow_symlinks=False)
        ]

    async def cleanup(self, dry_run: bool = False, active_download_ids: Iterable[str] = frozenset()) -> CleanupResult:
        """Adopt valid models no row owns; remove junk the service can prove is junk (stale staging files,
        broken `.gguf` files in MODELS_DIR that nobody writes), its own partial downloads that no active or
        resumable download owns, and rows whose files are gone (not when their folder is missing or
        empty: an unmounted drive). Everything else is kept and listed in `kept_foreign`.

        Never a registered model's file, never a valid GGUF, never a user's file, never through a link.
        `dry_run` lists the same and changes nothing.
        """
        kept_ids = set(active_download_ids)
        adopted: list[str] = []
        if dry_run:
            found = await asyncio.to_thread(self._survey, kept_ids)
            adopted = [str(path) for model in found.unregistered for path in model.paths]
        else:
            found = await asyncio.to_thread(self._survey, kept_ids)
            outcome = await self._adopt(found.unregistered)
            adopted = [path for record in outcome.adopted for path in record.all_paths]
        async with self._lock:
            return await in_thread_to_completion(self._cleanup, dry_run, kept_ids, adopted)

    def _cleanup(self, dry_run: bool, kept_download_ids: set[str], adopted: list[str]) -> CleanupResult:
        records = self.catalogue.list_models(include_pending=True)
        unavailable = self._unavailable_folders(records)
        broken = [r for r in records if r.state == "ready" and not self._files_present(r)]
        gone = [r for r in broken if not {Path(p).parent.as_posix() for p in r.all_paths} & unavailable]
        found = self._survey(kept_download_ids)  # again, under the lock: nothing changes between look and removal

        removed: list[str] = [Path(record.file_path).name for record in gone]
        freed = 0
        if not dry_run:
            for record in gone:
                self.catalogue.delete_model(record.model_id)
        for path, size in found.junk + found.stale_partials:
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
            f"{verb} {len(found.junk)} broken or leftover file(s), {len(found.stale_partials)} partial download(s) "
            f"and {len(gone)} catalogue entr{'y' if len(gone) == 1 else 'ies'} whose files are gone ({freed} bytes)."
        )
        if adopted:
            message += f" {'Would register' if dry_run else 'Registered'} {len(adopted)} model file(s) found in MODELS_DIR."
        if found.kept_foreign:
            message += f" Kept {len(found.kept_foreign)} file(s) that are not the service's (see kept_foreign)."
        if len(broken) > len(gone):
            message += (
                f" Kept {len(broken) - len(gone)} entr(ies) whose folder is missing or empty "
                f"({', '.join(sorted(unavailable))}): mount the drive, or delete them one by one."
            )
        if not dry_run and removed:
            logger.info("cleanup: %s", message)
        return CleanupResult(
            message=message, removed_files=removed, removed_count=len(removed), freed_bytes=freed, dry_run=dry_run,
            adopted=adopted, kept_foreign=found.kept_foreign,
        )
