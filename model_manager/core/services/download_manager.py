"""The download queue: the one place that accepts, schedules, cancels and reports downloads.

Jobs live in the SQLite catalogue (the `downloads` table) and, for speed, in memory. At most
`MAX_CONCURRENT_DOWNLOADS` transfer at once; the rest wait as `pending`, in request order. On start,
jobs that a crash or restart interrupted are queued again and continue from their partial files.
The pieces: `downloads/runner.py` runs one job, `downloads/transfer.py` moves the bytes,
`downloads/partial.py` keeps them resumable, `downloads/events.py` feeds the SSE streams.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from model_manager.core.catalogue import Catalogue, DownloadRecord, utc_now
from model_manager.core.config import Settings
from model_manager.core.errors import (
    DownloadFinishedError,
    DownloadNotFoundError,
    InsufficientStorageError,
    InvalidFileError,
    ModelManagerError,
    TooManySubscribersError,
)
from model_manager.core.models import (
    PROJECTOR_NAME_PATTERN,
    DownloadAccepted,
    DownloadRequest,
    DownloadState,
    DownloadStatus,
)
from model_manager.core.services import disk
from model_manager.core.services.downloads.events import StatusBroadcaster, Subscription
from model_manager.core.services.downloads.filenames import check_repo_filename
from model_manager.core.services.downloads.http import download_client
from model_manager.core.services.downloads.job import DownloadJob
from model_manager.core.services.downloads.partial import download_folder, remove_download_folder
from model_manager.core.services.downloads.runner import JobRunner

logger = logging.getLogger("model_manager.downloads")

PROGRESS_INTERVAL_SECONDS = 0.5  # live states of a transferring job, at least twice a second
SAVE_INTERVAL_SECONDS = 5.0  # how often the byte count of a running job is written to the catalogue
RECENT_FINISHED_IN_SNAPSHOT = 50  # finished downloads a new SSE subscriber is told about
# Finished downloads kept in memory (and so in GET /local/downloads): the latest ones. Older rows stay in
# the catalogue, which is where a retry looks for the partial bytes of an earlier failed attempt.
FINISHED_KEPT_IN_MEMORY = 200
MAX_STATUS_SUBSCRIBERS = 64  # open SSE streams at once; one more is refused (503 TOO_MANY_SUBSCRIBERS)


class DownloadManager:
    """Accepts download requests, runs them in order within the concurrency limit, reports their states.

    Create one per process, `await start()` before use and `await stop()` at shutdown. `stop` halts
    transfers with their progress saved; the jobs continue on the next `start`.
    """

    def __init__(self, settings: Settings, catalogue: Catalogue, hub: Any, storage: Any) -> None:
        self.settings = settings
        self._catalogue = catalogue
        self._hub = hub
        self._storage = storage
        self._jobs: dict[str, DownloadJob] = {}  # every download known, in request order
        self._queue: deque[str] = deque()  # pending ids, first to start on the left
        self._running: set[str] = set()
        self._events = StatusBroadcaster()
        self._accepting = asyncio.Lock()  # one request at a time between the duplicate check and the insert
        self._writer: ThreadPoolExecutor | None = None  # one thread: saves reach the catalogue in order
        self._client: httpx.AsyncClient | None = None
        self._runner: JobRunner | None = None
        self._ticker: asyncio.Task | None = None
        self._started = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the queue from the catalogue and resume the downloads a stop or crash interrupted."""
        if self._started:
            return
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="download-catalogue")
        self._client = download_client(
            self.settings.max_concurrent_downloads * (self.settings.download_connections + 1)
        )
        self._runner = JobRunner(self.settings, self._client, self._hub, self._storage, self._catalogue, self._changed)
        for record in await asyncio.to_thread(self._catalogue.list_downloads):
            job = DownloadJob(record)
            self._jobs[record.download_id] = job
            if job.is_active:
                record.status = DownloadState.pending.value
                self._queue.append(record.download_id)
        self._forget_old_finished()
        self._started = True
        if self._queue:
            logger.info("resuming %d interrupted or pending download(s)", len(self._queue))
        self._ticker = asyncio.create_task(self._report_progress(), name="download-progress")
        self._start_waiting_jobs()

    async def stop(self) -> None:
        """Halt every transfer, save where each one stands, and close the HTTP client."""
        if not self._started:
            return
        self._started = False
        if self._ticker is not None:
            self._ticker.cancel()
        running = [self._jobs[download_id] for download_id in self._running]
        for job in running:
            if job.task is not None:
                job.task.cancel()
        await asyncio.gather(*(job.task for job in running if job.task is not None), return_exceptions=True)
        for job in running:
            job.refresh_bytes()
            await self._save(job)
        if self._client is not None:
            await self._client.aclose()
        await asyncio.to_thread(self._writer.shutdown, True)

    # ------------------------------------------------------------ requests

    async def enqueue(self, request: DownloadRequest) -> DownloadAccepted:
        """Queue a download of one file, or of every file of a quantization variant.

        A variant's projector (mmproj) comes along as its own download (`include_projector`, `projector`),
        unless the library already holds it; the model is linked to it once both are in the library.
        The same files already pending or downloading give back the existing id. Raises InvalidFileError
        (a file name that could leave the storage folders, or not GGUF; a `projector` that is not one),
        the Hub's NotFoundError, GatedRepoError, RateLimitedError or HubUnavailableError, and
        InsufficientStorageError.
        """
        if (request.filename is None) == (request.quantization is None):
            raise InvalidFileError("give either 'filename' (one file) or 'quantization' (a whole variant), not both")
        projector = None
        if request.filename is not None:
            if request.projector is not None:
                raise InvalidFileError("'projector' goes with 'quantization': a single file comes alone")
            check_repo_filename(request.filename)
            existing = self._find_active(request.repo_id, request.revision, [request.filename])
            if existing is not None:
                return _accepted_again(existing)
            remote_files = [await self._hub.resolve_file(request.repo_id, request.filename, request.revision)]
        else:
            if request.projector is not None:
                _check_projector_name(request.projector, request.include_projector)
            resolved = await self._hub.resolve_download(
                request.repo_id,
                request.quantization,
                request.revision,
                include_projector=request.include_projector,
                projector=request.projector,
            )
            remote_files, projector = resolved.files, resolved.projector
        for remote in [*remote_files, *([projector] if projector else [])]:
            check_repo_filename(remote.filename)
        projector_model = None
        if projector is not None and projector.sha256:
            projector_model = await self._storage.find_model_with_files([projector.sha256])
        fetch_projector = projector is not None and projector_model is None

        async with self._accepting:
            link = {"filename": projector.filename, "sha256": projector.sha256} if projector and projector.sha256 else None
            extra = (projector.size or 0) if fetch_projector else 0
            job, created, resumed = await self._accept(
                request, remote_files, request.quantization, also_needed=extra, projector=link
            )
            projector_job, projector_created, projector_problem = None, False, None
            if fetch_projector:
                try:
                    projector_job, projector_created, _ = await self._accept(request, [projector], None)
                except ModelManagerError as error:  # the model goes on; asking again retries the projector
                    projector_problem = error.message
        if created:
            self._publish(job)
        if projector_created:
            self._publish(projector_job)
        self._start_waiting_jobs()
        if not created:
            accepted = _accepted_again(job)
        else:
            position = len(self._queue)
            message = "Download started" if job.download_id in self._running else f"Download queued ({position} waiting)"
            if resumed:
                message += "; it continues from the bytes an earlier failed attempt saved"
            accepted = DownloadAccepted(download_id=job.download_id, message=message)
        if projector is not None:
            accepted.projector = projector.filename
            accepted.projector_download_id = projector_job.download_id if projector_job else None
            accepted.projector_model_id = projector_model.model_id if projector_model else None
            if projector_model is not None:
                accepted.message += f"; its projector {projector.filename} is already in the library"
            elif projector_job is not None:
                accepted.message += f"; its projector {projector.filename} comes along (download {projector_job.download_id})"
            else:
                accepted.message += f"; its projector {projector.filename} could not be queued: {projector_problem}"
        return accepted

    async def _accept(
        self,
        request: DownloadRequest,
        remote_files: list[Any],
        quantization: str | None,
        *,
        also_needed: int = 0,
        projector: dict[str, str] | None = None,
    ) -> tuple[DownloadJob, bool, bool]:
        """The job for these files: the active one fetching them, or a new queued one (call under `_accepting`).

        Returns `(job, created, resumed)`. `also_needed` bytes (the projector coming along) count in the free
        space check; `projector` ({filename, sha256}) is what the model is linked to once both are in the library.
        """
        filenames = [remote.filename for remote in remote_files]
        existing = self._find_active(request.repo_id, request.revision, filenames)
        if existing is not None:
            return existing, False, False
        download_id = str(uuid.uuid4())
        earlier = await self._failed_attempt_with_partials(request.repo_id, request.revision, filenames)
        sizes = [remote.size for remote in remote_files]
        total = None if None in sizes else sum(sizes)
        # Space first: a refusal must leave the earlier attempt's bytes where they are, under its id.
        await asyncio.to_thread(self._check_free_space, total, earlier, also_needed)
        resumed = earlier is not None and await self._take_over_partials(earlier, download_id)
        files = [
            {
                "filename": remote.filename,
                "url": remote.url,
                "size": remote.size,
                "sha256": remote.sha256,
                "etag": remote.etag,
                "commit": remote.commit,
            }
            for remote in remote_files
        ]
        if projector is not None:
            files[0]["projector"] = projector  # read by the runner when the model is in the library
        record = DownloadRecord(
            download_id=download_id,
            repo_id=request.repo_id,
            revision=request.revision,
            filename=filenames[0],
            quantization=quantization,
            status=DownloadState.pending.value,
            created_at=utc_now(),
            files=files,
            total_bytes=total,
        )
        try:
            await asyncio.to_thread(self._catalogue.insert_download, record)
        except BaseException:
            if resumed:  # give the bytes back to the attempt that saved them
                await asyncio.to_thread(self._move_partials, download_id, earlier.download_id)
            raise
        if resumed:
            await self._forget_partial_bytes(earlier)
        job = DownloadJob(record)
        self._jobs[download_id] = job
        self._queue.append(download_id)
        return job, True, resumed

    async def cancel(self, download_id: str) -> None:
        """Stop a download and delete its partial files. Raises DownloadNotFoundError, DownloadFinishedError.

        A cancel wins completely (no model, no files left) unless the verified files are already being
        registered: then it waits for that, and a completed download answers DownloadFinishedError.
        """
        job = self._require(download_id)
        if job.committing and job.task is not None:
            await asyncio.wait([job.task])  # its outcome decides; the task itself is not cancelled
        if job.state is DownloadState.completed:
            raise DownloadFinishedError(
                f"download {download_id} has already completed; delete the model instead",
                details={"download_id": download_id, "model_id": job.record.model_id},
            )
        if job.state is DownloadState.cancelled:
            return
        if job.task is not None and not job.task.done():
            job.task.cancel()
            await asyncio.gather(job.task, return_exceptions=True)
            if job.state is DownloadState.completed:  # the cancel came too late (or was lost): it completed
                raise DownloadFinishedError(
                    f"download {download_id} completed before it could be cancelled; delete the model instead",
                    details={"download_id": download_id, "model_id": job.record.model_id},
                )
        if download_id in self._queue:
            self._queue.remove(download_id)
        job.refresh_bytes()
        job.track(None, 0)
        await asyncio.to_thread(remove_download_folder, self.settings.downloads_dir, download_id)
        job.record.status = DownloadState.cancelled.value
        job.record.completed_at = utc_now()
        job.record.error_message = None
        await self._changed(job)

    def list(self) -> list[DownloadStatus]:
        """Every download known, in request order."""
        return [job.status() for job in self._jobs.values()]

    def get(self, download_id: str) -> DownloadStatus:
        """The state of one download. Raises DownloadNotFoundError."""
        return self._require(download_id).status()

    def check_subscriber_room(self) -> None:
        """Raise TooManySubscribersError when `MAX_STATUS_SUBSCRIBERS` streams are already open."""
        if self._events.subscriber_count >= MAX_STATUS_SUBSCRIBERS:
            raise TooManySubscribersError(
                f"{MAX_STATUS_SUBSCRIBERS} download status streams are already open; close one (or poll "
                "GET /local/downloads) and try again",
                details={"max_subscribers": MAX_STATUS_SUBSCRIBERS},
            )

    def subscribe(self, download_id: str | None = None) -> Subscription:
        """Live states: first one per known download (recent finished ones too), then every change.

        With `download_id`, only that download's (raises DownloadNotFoundError when unknown). Callers
        check `check_subscriber_room()` first (the route does, before its stream starts).
        """
        if download_id is not None:
            snapshot = [self._require(download_id).status()]
        else:
            jobs = list(self._jobs.values())
            finished = [job for job in jobs if not job.is_active][-RECENT_FINISHED_IN_SNAPSHOT:]
            shown = {id(job) for job in finished}
            snapshot = [job.status() for job in jobs if job.is_active or id(job) in shown]
        return self._events.subscribe(snapshot, download_id)

    def active_ids(self) -> set[str]:
        """Ids of the downloads pending, transferring or verifying (they own their partial folders)."""
        return {download_id for download_id, job in self._jobs.items() if job.is_active}

    # ------------------------------------------------------------ scheduling

    def _start_waiting_jobs(self) -> None:
        while self._started and self._queue and len(self._running) < self.settings.max_concurrent_downloads:
            job = self._jobs[self._queue.popleft()]
            self._running.add(job.download_id)
            job.task = asyncio.create_task(self._run(job), name=f"download-{job.download_id}")

    async def _run(self, job: DownloadJob) -> None:
        try:
            await self._runner.run(job)
        except asyncio.CancelledError:
            pass  # cancel() or stop() decides what happens to the job
        finally:
            job.task = None
            self._running.discard(job.download_id)
            self._forget_old_finished()
            self._start_waiting_jobs()

    async def _report_progress(self) -> None:
        """Publish each transferring job's progress and speed regularly; save its byte count now and then."""
        loop = asyncio.get_running_loop()
        last_save = loop.time()
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)
            save = loop.time() - last_save >= SAVE_INTERVAL_SECONDS
            for download_id in list(self._running):
                job = self._jobs[download_id]
                if job.state is not DownloadState.downloading:
                    continue
                job.speed.sample(job.bytes_downloaded)
                self._publish(job)
                if save:
                    job.refresh_bytes()
                    try:
                        await self._save(job)
                    except Exception:  # a busy or failing catalogue must not stop the progress reports
                        logger.warning("could not save the progress of download %s", download_id, exc_info=True)
            if save:
                last_save = loop.time()

    # ------------------------------------------------------------ helpers

    async def _changed(self, job: DownloadJob) -> None:
        """Save and publish a state change."""
        await self._save(job)
        self._publish(job)
        if not job.is_active:
            self._forget_old_finished()

    def _forget_old_finished(self) -> None:
        """Keep only the latest `FINISHED_KEPT_IN_MEMORY` finished jobs in memory (the catalogue keeps all)."""
        finished = [download_id for download_id, job in self._jobs.items() if not job.is_active]
        for download_id in finished[: max(0, len(finished) - FINISHED_KEPT_IN_MEMORY)]:
            if self._jobs[download_id].task is None:  # a task still ending keeps its job: it goes next time
                del self._jobs[download_id]

    async def _save(self, job: DownloadJob) -> None:
        record = job.record_copy()
        await asyncio.get_running_loop().run_in_executor(self._writer, self._catalogue.save_download, record)

    def _publish(self, job: DownloadJob) -> None:
        self._events.publish(job.status())

    def _require(self, download_id: str) -> DownloadJob:
        job = self._jobs.get(download_id)
        if job is None:
            raise DownloadNotFoundError(f"no download with id {download_id!r}", details={"download_id": download_id})
        return job

    def _find_active(self, repo_id: str, revision: str, filenames: list[str]) -> DownloadJob | None:
        for job in self._jobs.values():
            if job.is_active and job.same_files(repo_id, revision, filenames):
                return job
        return None

    async def _failed_attempt_with_partials(
        self, repo_id: str, revision: str, filenames: list[str]
    ) -> DownloadRecord | None:
        """The latest failed attempt at the same files whose partial folder is still there, if any.

        Read from the catalogue, not memory: finished jobs leave memory after a while (`_forget_old_finished`).
        """

        def find() -> DownloadRecord | None:
            for record in reversed(self._catalogue.list_downloads((DownloadState.failed.value,))):
                if DownloadJob(record).same_files(repo_id, revision, filenames):
                    folder = download_folder(self.settings.downloads_dir, record.download_id)
                    return record if folder.is_dir() else None
            return None

        return await asyncio.to_thread(find)

    async def _take_over_partials(self, earlier: DownloadRecord, new_id: str) -> bool:
        """Give the new job `earlier`'s partial folder. False when it vanished meanwhile."""
        try:
            await asyncio.to_thread(self._move_partials, earlier.download_id, new_id)
        except FileNotFoundError:
            return False
        return True

    def _move_partials(self, from_id: str, to_id: str) -> None:
        # A rename must never replace anything, not even an empty folder.
        disk.rename_no_replace(download_folder(self.settings.downloads_dir, from_id), download_folder(self.settings.downloads_dir, to_id))

    async def _forget_partial_bytes(self, earlier: DownloadRecord) -> None:
        """The failed attempt no longer holds bytes: its row (and job, if still in memory) says 0."""
        job = self._jobs.get(earlier.download_id)
        if job is not None:
            job.record.bytes_downloaded = 0
            await self._save(job)
        else:
            earlier.bytes_downloaded = 0
            await asyncio.get_running_loop().run_in_executor(self._writer, self._catalogue.save_download, earlier)

    def _check_free_space(self, total: int | None, earlier: DownloadRecord | None, also_needed: int = 0) -> None:
        """Raise InsufficientStorageError unless the disk holds this download and the others still running.

        The bytes that `earlier` (a failed attempt the new job will continue) saved count as already there;
        `also_needed` bytes (a projector queued next) count too.
        """
        if total is None:
            return
        total += also_needed
        already = 0
        if earlier is not None:
            folder = download_folder(self.settings.downloads_dir, earlier.download_id)
            already = sum(entry.stat().st_size for entry in folder.glob("*.part")) if folder.is_dir() else 0
        needed = total - already
        for job in self._jobs.values():
            if job.is_active and job.record.total_bytes:
                needed += max(0, job.record.total_bytes - job.bytes_downloaded)
        _require_free_space(self.settings.downloads_dir, needed, "the download (with those already running)")
        if not disk.same_filesystem(self.settings.downloads_dir, self.settings.models_dir):
            _require_free_space(self.settings.models_dir, total, "the model")


def _require_free_space(folder: Path, needed: int, what: str) -> None:
    free = disk.free_bytes(folder)
    if free < needed:
        raise InsufficientStorageError(
            f"not enough free disk space: {what} needs {_gb(needed)} but {folder} has {_gb(free)} free; "
            "free some space and try again",
            details={"required_bytes": needed, "free_bytes": free},
        )


def _check_projector_name(projector: str, include_projector: bool) -> None:
    """Raise InvalidFileError unless `projector` may name a projector file to fetch."""
    if not include_projector:
        raise InvalidFileError("'projector' picks the projector to fetch; it cannot go with include_projector=false")
    check_repo_filename(projector)
    if not re.match(PROJECTOR_NAME_PATTERN, projector):
        raise InvalidFileError(
            f"{projector!r} is not a multimodal projector file (its name has no 'mmproj'); the providers list a "
            "repo's projectors", details={"projector": projector},
        )


def _accepted_again(job: DownloadJob) -> DownloadAccepted:
    return DownloadAccepted(
        download_id=job.download_id, message=f"Already {job.record.status}: the existing download continues"
    )


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB"
