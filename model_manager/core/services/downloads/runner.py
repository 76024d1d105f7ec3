"""Carries one download job from its first byte to a model in the library, or to a failure that says why."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from model_manager.core.catalogue import Catalogue, utc_now
from model_manager.core.config import Settings
from model_manager.core.errors import InsufficientStorageError, ModelManagerError
from model_manager.core.models import DownloadState
from model_manager.core.services.disk import is_disk_full
from model_manager.core.services.downloads.filenames import library_name
from model_manager.core.services.downloads.job import DownloadJob
from model_manager.core.services.downloads.partial import PartialFile, download_folder, remove_download_folder
from model_manager.core.services.downloads.transfer import (
    FileSource,
    FileTransfer,
    TransferError,
    TransferOptions,
    UpstreamChangedError,
)
from model_manager.core.services.threads import in_thread_to_completion

logger = logging.getLogger("model_manager.downloads")


class VerificationError(Exception):
    """The bytes fetched do not hash to the SHA-256 the Hub published."""


class JobRunner:
    """Runs jobs: fetches each file, checks its SHA-256, hands the files to the library.

    `on_change(job)` is awaited after every state change (the manager saves and publishes it).
    """

    def __init__(
        self,
        settings: Settings,
        client: httpx.AsyncClient,
        hub: Any,
        storage: Any,
        catalogue: Catalogue,
        on_change: Callable[[DownloadJob], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._client = client
        self._hub = hub
        self._storage = storage
        self._catalogue = catalogue
        self._on_change = on_change
        self._options = TransferOptions.from_settings(settings)

    async def run(self, job: DownloadJob) -> None:
        """Take `job` to completed or failed. Cancellation propagates (the caller decides what it means)."""
        try:
            if await self._complete_from_library(job):
                return
            await self._transition(job, DownloadState.downloading)
            paths, digests = await self._fetch_files(job)
            await self._transition(job, DownloadState.verifying)
            self._verify(job, digests)
            job.committing = True  # no await since the last cancellation point: a cancel either came or waits
            await self._commit(job, paths, digests)
        except asyncio.CancelledError:
            raise
        except VerificationError as exc:
            await self._fail(job, str(exc), keep_partial=False)
        except UpstreamChangedError as exc:
            await self._fail(job, f"download failed: {exc}", keep_partial=False)
        except TransferError as exc:
            message = f"download failed: {exc}. Request it again to continue from the bytes already saved"
            await self._fail(job, message, keep_partial=True)
        except OSError as exc:
            if is_disk_full(exc):
                message = (
                    f"the disk holding {self._settings.downloads_dir} is full; free some space and request "
                    "the download again: it continues from the bytes already saved"
                )
            else:
                logger.warning("download %s: file error", job.download_id, exc_info=True)
                message = f"could not write the download: {exc}"
            await self._fail(job, message, keep_partial=True)
        except ModelManagerError as exc:  # from the library: not a GGUF file, no room in MODELS_DIR...
            await self._fail(job, exc.message, keep_partial=isinstance(exc, InsufficientStorageError))
        except Exception as exc:
            logger.exception("download %s failed", job.download_id)
            message = f"internal error ({type(exc).__name__}: {exc}); see the service log"
            await self._fail(job, message, keep_partial=True)
        finally:
            job.committing = False

    async def _commit(self, job: DownloadJob, paths: list[Path], digests: list[str]) -> None:
        """Register the verified files as one model and complete the job.

        The library's registration finishes in its thread even when its caller is cancelled, so a cancel
        landing here could leave a model behind a `cancelled` download: `DownloadManager.cancel` therefore
        waits for a committing job instead of cancelling it. (A shutdown may still cancel it; the next
        start then finds the model by its hash and completes the job.)
        """
        model = await self._storage.adopt_download(
            paths,
            [library_name(name) for name in job.filenames],
            digests,
            repo_id=job.record.repo_id,
        )
        await self._remove_partials(job)
        await self._link_projector(job, model.model_id)
        job.record.model_id = model.model_id
        job.record.local_file_path = model.file_path
        job.record.sha256 = model.file_hash
        await self._transition(job, DownloadState.completed)

    # ------------------------------------------------------------ steps

    async def _complete_from_library(self, job: DownloadJob) -> bool:
        """Finish at once when the library already holds the model (a repeated request, or a crash after the move)."""
        hashes = [file.get("sha256") for file in job.record.files]
        if not hashes or not all(hashes):
            return False
        # Every file must match: one part of a split variant already in the library is not the variant.
        existing = await self._storage.find_model_with_files(hashes)
        if existing is None or not await asyncio.to_thread(lambda: all(Path(p).is_file() for p in existing.all_paths)):
            return False
        await self._remove_partials(job)
        await self._link_projector(job, existing.model_id)
        job.record.started_at = job.record.started_at or utc_now()
        job.record.model_id = existing.model_id
        job.record.local_file_path = existing.file_path
        job.record.sha256 = existing.file_hash
        job.record.bytes_downloaded = job.record.total_bytes or existing.file_size_bytes
        await self._transition(job, DownloadState.completed)
        return True

    async def _link_projector(self, job: DownloadJob, model_id: str) -> None:
        """Link the model to the projector that came along with it (by SHA-256: it may arrive before or after)."""
        projector = job.record.files[0].get("projector") if job.record.files else None
        if not projector:
            return
        try:
            await self._storage.link_projector(model_id, projector["sha256"])
        except Exception:  # the model is in the library either way; a repeated request links it again
            logger.warning("download %s: could not link its projector", job.download_id, exc_info=True)

    async def _fetch_files(self, job: DownloadJob) -> tuple[list[Path], list[str]]:
        folder = download_folder(self._settings.downloads_dir, job.download_id)
        paths: list[Path] = []
        digests: list[str] = []
        done = 0
        for index, info in enumerate(job.record.files):
            # Never abandoned by a cancel: the cancel then removes the folder this creates, after it.
            partial = await in_thread_to_completion(
                functools.partial(PartialFile.open, folder, index, size=info.get("size"), sha256=info.get("sha256"))
            )
            try:
                source = FileSource(url=info["url"], hub_headers=self._hub.hub_auth_headers(), size=info.get("size"))
                transfer = FileTransfer(self._client, source, partial, self._options)
                job.track(transfer, done)
                digest = await transfer.run()
            finally:
                partial.close()
            if info.get("size") is None:  # learnt from the server
                info["size"] = partial.size
            done += partial.size or 0
            job.track(None, 0)
            job.record.bytes_downloaded = done
            paths.append(partial.data_path)
            digests.append(digest)
        job.record.total_bytes = done
        return paths, digests

    @staticmethod
    def _verify(job: DownloadJob, digests: list[str]) -> None:
        for info, digest in zip(job.record.files, digests):
            expected = info.get("sha256")
            if expected and digest != expected:
                raise VerificationError(
                    f"SHA-256 mismatch for {info['filename']}: the Hub publishes {expected} but the downloaded "
                    f"bytes hash to {digest}; the file was discarded. Request the download again"
                )

    async def _transition(self, job: DownloadJob, state: DownloadState) -> None:
        record = job.record
        record.status = state.value
        if state is DownloadState.downloading:
            record.started_at = record.started_at or utc_now()
            record.error_message = None
            job.speed.reset()
        if state.is_terminal:
            record.completed_at = utc_now()
            job.track(None, 0)
        await self._on_change(job)

    async def _fail(self, job: DownloadJob, message: str, *, keep_partial: bool) -> None:
        logger.warning("download %s failed: %s", job.download_id, message)
        job.refresh_bytes()
        if not keep_partial:
            await self._remove_partials(job)
            job.record.bytes_downloaded = 0
        job.record.error_message = message or "download failed"
        await self._transition(job, DownloadState.failed)

    async def _remove_partials(self, job: DownloadJob) -> None:
        await asyncio.to_thread(remove_download_folder, self._settings.downloads_dir, job.download_id)
