"""SHA-256 of a file computed while its bytes arrive, even when they arrive out of order.

A hash must see the bytes in file order. Bytes written exactly where the hash has reached are hashed
from the buffer they were written from; bytes written further ahead (by another connection of a
parallel download, or by an earlier run of a resumed one) are hashed from the file once the hash
reaches them, usually from the page cache, mapped rather than read (`page_hash.py`: with several
connections most bytes come this way). Hashing runs on its own thread (`hashlib` releases the GIL),
beside the network and the disk writes; it holds no bytes of its own.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from model_manager.core.services.page_hash import BLOCK, hash_pages

_STOP = object()


class OrderedSha256:
    """Hashes the file at `path` in order while it is being written."""

    def __init__(self, path: Path, already_written: list[tuple[int, int]] = ()) -> None:
        self._path = Path(path)
        self._hash = hashlib.sha256()
        self._position = 0  # everything before this offset has been hashed
        self._ahead: list[list[int]] = []  # written but not hashed yet: sorted, disjoint [start, end)
        for start, end in already_written:
            self._add_ahead(start, end)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._accepting = True  # False once the thread has ended: `written` then releases at once
        self._lock = threading.Lock()
        self._aborted = False
        self._error: BaseException | None = None
        self._file = None
        self._mapped = True  # hash written bytes from their mapped pages (False: read them)
        self._thread = threading.Thread(target=self._run, name="download-sha256", daemon=True)
        self._thread.start()

    @property
    def position(self) -> int:
        """How many bytes from the start have been hashed."""
        return self._position

    def written(self, offset: int, data: bytes | memoryview, release: Callable[[], None] = lambda: None) -> None:
        """Tell the hash that `data` was written at `offset`. `release()` is called (from the hashing
        thread) once `data` is no longer needed, so its buffer may be reused. Thread-safe, never blocks."""
        with self._lock:
            if self._accepting:
                self._queue.put((offset, data, release))
                return
        release()

    def finish(self, size: int) -> str:
        """Wait until the first `size` bytes are hashed; return the hex digest (blocking).

        Raises RuntimeError when bytes before `size` were never written, or the error the hash met.
        """
        self._queue.put(_STOP)
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._position != size:
            raise RuntimeError(f"hashed {self._position} bytes of {size}: some bytes were never written")
        return self._hash.hexdigest()

    def abort(self) -> None:
        """Stop hashing; the thread releases what it holds and ends soon, without being waited for."""
        self._aborted = True
        self._queue.put(_STOP)

    def abort_and_wait(self) -> None:
        """Stop hashing and wait until the thread has let go of the file (blocking): call before the file
        is cut short, which must never happen under its mapping."""
        self.abort()
        self._thread.join()

    # ------------------------------------------------------------ the hashing thread

    def _run(self) -> None:
        try:
            self._catch_up()  # what an earlier run left on disk
            while (item := self._queue.get()) is not _STOP:
                offset, data, release = item
                try:
                    if self._aborted or self._error is not None:
                        continue
                    if offset == self._position:
                        self._hash.update(data)
                        self._position += len(data)
                    elif offset > self._position:
                        self._add_ahead(offset, offset + len(data))
                finally:
                    release()
                self._catch_up()
        except BaseException as exc:  # reported by finish()
            self._error = exc
        finally:
            with self._lock:
                self._accepting = False
            self._release_all()
            if self._file is not None:
                self._file.close()

    def _release_all(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                item[2]()

    def _catch_up(self) -> None:
        """Hash, from the file, written bytes that the hash has now reached."""
        while self._ahead and self._ahead[0][0] <= self._position and not self._aborted:
            start, end = self._ahead.pop(0)
            if self._file is None:
                self._file = open(self._path, "rb", buffering=0)
            on_disk = os.fstat(self._file.fileno()).st_size
            if on_disk < end:  # never map past the end of the file: that is SIGBUS, not a short read
                raise RuntimeError(f"{self._path} ends at {on_disk}, before {end}")
            while self._position < end and not self._aborted:
                count = min(BLOCK, end - self._position)
                if self._mapped:
                    try:
                        hash_pages(self._file.fileno(), self._position, count, self._hash)
                    except OSError:  # a filesystem that cannot map files: read them instead
                        self._mapped = False
                        continue
                else:
                    block = os.pread(self._file.fileno(), count, self._position)
                    if len(block) != count:
                        raise RuntimeError(f"{self._path} ends at {self._position + len(block)}, before {end}")
                    self._hash.update(block)
                self._position += count

    def _add_ahead(self, start: int, end: int) -> None:
        if end <= start:
            return
        index = bisect.bisect_left(self._ahead, [start, end])
        self._ahead.insert(index, [start, end])
        # Merge with the neighbours it touches.
        merged: list[list[int]] = []
        for interval in self._ahead[max(0, index - 1) : index + 2]:
            if merged and interval[0] <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], interval[1])
            else:
                merged.append(interval)
        self._ahead[max(0, index - 1) : index + 2] = merged
