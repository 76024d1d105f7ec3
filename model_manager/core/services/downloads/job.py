"""A download job as the queue holds it: its catalogue record plus what only a running transfer knows."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Protocol

from model_manager.core.catalogue import DownloadRecord
from model_manager.core.models import DownloadState, DownloadStatus

ACTIVE_STATES = (DownloadState.pending.value, DownloadState.downloading.value, DownloadState.verifying.value)
_SPEED_WINDOW_SECONDS = 5.0


class Progress(Protocol):
    @property
    def bytes_completed(self) -> int: ...


class SpeedMeter:
    """Transfer speed over the last few seconds, from samples of the bytes done so far."""

    def __init__(self, window_seconds: float = _SPEED_WINDOW_SECONDS) -> None:
        self._window = window_seconds
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, total_bytes: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._samples.append((now, total_bytes))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()

    def bytes_per_second(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (first_time, first_bytes), (last_time, last_bytes) = self._samples[0], self._samples[-1]
        if last_time - first_time <= 0:
            return None
        return max(0, last_bytes - first_bytes) / (last_time - first_time)

    def reset(self) -> None:
        self._samples.clear()


@dataclass
class DownloadJob:
    """One download: its saved record, and while it runs, its task and the progress of its current file."""

    record: DownloadRecord
    task: asyncio.Task | None = None
    speed: SpeedMeter = field(default_factory=SpeedMeter)
    # Set once the files are handed to the library: from then on a cancel waits for the outcome instead
    # of interrupting a registration that would finish in its thread anyway.
    committing: bool = False
    _current: Progress | None = None
    _bytes_before_current: int = 0

    @property
    def download_id(self) -> str:
        return self.record.download_id

    @property
    def state(self) -> DownloadState:
        return DownloadState(self.record.status)

    @property
    def is_active(self) -> bool:
        return self.record.status in ACTIVE_STATES

    @property
    def filenames(self) -> list[str]:
        return [info["filename"] for info in self.record.files] or [self.record.filename]

    def same_files(self, repo_id: str, revision: str, filenames: list[str]) -> bool:
        return (self.record.repo_id, self.record.revision, self.filenames) == (repo_id, revision, filenames)

    def track(self, progress: Progress | None, bytes_before: int) -> None:
        """Count `progress` (the file being fetched) on top of `bytes_before` from earlier files."""
        self._current = progress
        self._bytes_before_current = bytes_before

    @property
    def bytes_downloaded(self) -> int:
        if self._current is not None:
            return self._bytes_before_current + self._current.bytes_completed
        return self.record.bytes_downloaded

    def refresh_bytes(self) -> None:
        """Copy the live byte count into the record (which is what gets saved)."""
        self.record.bytes_downloaded = self.bytes_downloaded

    def status(self) -> DownloadStatus:
        record = self.record
        state = self.state
        done = self.bytes_downloaded
        total = record.total_bytes
        if state is DownloadState.completed:
            percent = 100.0
        elif total:
            percent = round(min(100.0, done * 100.0 / total), 2)
        else:
            percent = 0.0
        speed = self.speed.bytes_per_second() if state is DownloadState.downloading else None
        eta = None
        if speed and total is not None:
            eta = round(max(0, total - done) / speed, 1)
        return DownloadStatus(
            download_id=record.download_id,
            repo_id=record.repo_id,
            filename=record.filename,
            status=state,
            progress_percent=percent,
            bytes_downloaded=done,
            total_bytes=total,
            download_speed_mbps=None if speed is None else round(speed * 8 / 1_000_000, 3),
            eta_seconds=eta,
            error_message=record.error_message,
            started_at=record.started_at,
            completed_at=record.completed_at,
            local_file_path=record.local_file_path,
            model_id=record.model_id,
            sha256=record.sha256,
            revision=record.revision,
            quantization=record.quantization,
            files=self.filenames,
            created_at=record.created_at,
        )

    def record_copy(self) -> DownloadRecord:
        """A copy of the record that a thread may save while the job goes on changing."""
        return replace(self.record, files=[dict(info) for info in self.record.files])
