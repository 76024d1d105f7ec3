"""The on-disk state of an unfinished download, kept so that a crash or restart loses almost nothing.

As in Ollama's `server/download.go`, a file is fetched as a list of parts, each with its offset, size and
bytes completed; that list is saved beside the bytes at every checkpoint. The layout is

    DOWNLOADS_DIR/<download_id>/file-000.part   the bytes of the download's first file, each at its offset
    DOWNLOADS_DIR/<download_id>/file-000.json   {"size", "sha256", "validator", "parts": [...]}

Names come from the download id (a uuid) and the file's index, never from the repo's file name, so they
can neither collide nor leave the folder. The state is written only after the bytes it counts were
flushed (`sync`), so it never claims bytes that a power cut could lose.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_manager.core.services.disk import start_write_back

_STATE_VERSION = 1


def download_folder(downloads_dir: Path, download_id: str) -> Path:
    """The folder of one download's partial files, named by its id (what the storage cleanup looks for).

    Raises ValueError unless `download_id` is a uuid in its canonical form, so the path stays inside.
    """
    if str(uuid.UUID(download_id)) != download_id:
        raise ValueError(f"not a download id: {download_id!r}")
    return Path(downloads_dir) / download_id


def remove_download_folder(downloads_dir: Path, download_id: str) -> None:
    """Delete a download's partial files, if any (blocking; run it in a thread)."""
    shutil.rmtree(download_folder(downloads_dir, download_id), ignore_errors=True)


@dataclass
class Part:
    """A byte range of the file: `completed` bytes from `offset` are on disk. `size` None: up to the end."""

    offset: int
    size: int | None
    completed: int = 0
    # Live bookkeeping of the transfer, never saved: bytes received (written or being written) and
    # whether a connection is working on this part.
    received: int = 0
    busy: bool = False

    @property
    def end(self) -> int | None:
        return None if self.size is None else self.offset + self.size

    @property
    def done(self) -> bool:
        return self.size is not None and self.completed >= self.size

    @property
    def remaining(self) -> int | None:
        return None if self.size is None else self.size - self.received


class PartialFile:
    """One file of a download being written: its bytes (written at any offset) and its saved parts."""

    def __init__(self, folder: Path, index: int, *, size: int | None, sha256: str | None) -> None:
        self.folder = Path(folder)
        self.data_path = self.folder / f"file-{index:03d}.part"
        self.state_path = self.folder / f"file-{index:03d}.json"
        self.size = size
        self.sha256 = sha256
        # The ETag (or Last-Modified) of the bytes on disk, sent as If-Range so a changed file is noticed.
        self.validator: str | None = None
        self.parts: list[Part] = []
        self._fd: int | None = None
        self._saving = threading.Lock()  # a periodic and a final checkpoint may overlap

    # ------------------------------------------------------------ state

    @classmethod
    def open(cls, folder: Path, index: int, *, size: int | None, sha256: str | None) -> PartialFile:
        """The partial file as a previous run left it, or a fresh one (blocking).

        Saved progress is kept only when it describes the same file (same size and SHA-256); anything
        else is discarded. Creates the folder and opens the data file for writing.
        """
        partial = cls(folder, index, size=size, sha256=sha256)
        partial.folder.mkdir(parents=True, exist_ok=True)
        if not partial._load():
            partial.data_path.unlink(missing_ok=True)
            partial.state_path.unlink(missing_ok=True)
            partial.parts = []
            partial.validator = None
        partial._fd = os.open(partial.data_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        return partial

    def _load(self) -> bool:
        try:
            state = json.loads(self.state_path.read_text())
            if state.get("version") != _STATE_VERSION or state.get("size") != self.size:
                return False
            if state.get("sha256") != self.sha256:
                return False
            parts = [Part(int(p["offset"]), p["size"], int(p["completed"])) for p in state["parts"]]
            on_disk = self.data_path.stat().st_size
        except (OSError, ValueError, KeyError, TypeError):
            return False
        for part in parts:
            # Bytes that the state counts but the file does not hold are fetched again.
            limit = on_disk - part.offset if part.size is None else min(part.size, on_disk - part.offset)
            part.completed = max(0, min(part.completed, limit))
            part.received = part.completed
        self.parts = sorted(parts, key=lambda p: p.offset)
        self.validator = state.get("validator")
        return True

    def snapshot(self) -> dict[str, Any]:
        """The state to save, as of now. Take it on the event loop, save it with `save` in a thread."""
        return {
            "version": _STATE_VERSION,
            "size": self.size,
            "sha256": self.sha256,
            "validator": self.validator,
            "parts": [{"offset": p.offset, "size": p.size, "completed": p.completed} for p in self.parts],
        }

    def save(self, snapshot: dict[str, Any]) -> None:
        """Flush the bytes, then atomically replace the saved state with `snapshot` (blocking)."""
        with self._saving:
            self.sync()
            temporary = self.state_path.with_suffix(".json.tmp")
            with open(temporary, "w") as file:
                json.dump(snapshot, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.state_path)

    @property
    def bytes_completed(self) -> int:
        return sum(part.completed for part in self.parts)

    @property
    def complete(self) -> bool:
        return bool(self.parts) and all(part.done for part in self.parts)

    def reset(self, parts: list[Part]) -> None:
        """Forget every byte fetched so far and plan the file as `parts` (blocking)."""
        self.parts = parts
        self.validator = None
        if self._fd is not None:
            os.ftruncate(self._fd, 0)

    # ------------------------------------------------------------ bytes

    def write(self, data: bytes | memoryview, offset: int) -> None:
        """Write `data` at `offset` (blocking). Raises OSError, ENOSPC included."""
        fd = self._require_fd()
        view = memoryview(data)
        start, length = offset, len(view)
        while view:
            count = os.pwrite(fd, view, offset)
            offset += count
            view = view[count:]
        start_write_back(fd, start, length)  # so the fsyncs of checkpoints and of the end have little to do

    def sync(self) -> None:
        """Flush the written bytes to the disk (blocking)."""
        if self._fd is not None:
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _require_fd(self) -> int:
        if self._fd is None:
            raise RuntimeError("partial file is not open")
        return self._fd
