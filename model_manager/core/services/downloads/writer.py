"""Writes one connection's bytes to disk in order, on a thread of its own, a few buffers ahead of the network.

Bytes are copied out of each network read into a few reused buffers: the HTTP stack's own chunks are
then freed at once (holding them makes the allocator return and re-fault memory, which halved the
speed), and memory stays at `depth + 2` buffers per connection whatever the file size. A buffer is
reused once written and hashed. Waiting for each write before reading on would idle the connection,
and a shared thread pool would reorder writes, so each connection gets one writer thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

WRITES_IN_FLIGHT = 3

Release = Callable[[], None]


class ConnectionWriter:
    """Accumulates bytes for consecutive file offsets and writes them in order on one thread.

    `write(view, offset, release)` does the blocking write and calls `release()` once the bytes are no
    longer needed (possibly later, from another thread); `on_written(size)` (given to `start`) counts
    each write as soon as it has ended well. After a failed write the ones queued after it fail too
    (never a gap in what counts as written) and `submit`, `flush` or `drain` raises the error.
    """

    def __init__(
        self, write: Callable[[memoryview, int, Release], None], buffer_bytes: int, depth: int = WRITES_IN_FLIGHT
    ) -> None:
        self._write = write
        self._depth = depth
        self._loop = asyncio.get_running_loop()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="download-write")
        self._free = [bytearray(buffer_bytes) for _ in range(depth + 2)]
        self._returned = asyncio.Event()
        self._buffer: bytearray | None = None
        self._filled = 0
        self._offset = 0  # file offset of the buffer's first byte
        self._on_written: Callable[[int], None] = lambda size: None
        self._in_flight: deque[_Write] = deque()
        self._error: BaseException | None = None

    def start(self, offset: int, on_written: Callable[[int], None]) -> None:
        """The next bytes belong at `offset`; count them with `on_written`. Call with nothing buffered."""
        if self._filled:
            raise RuntimeError("start() with bytes still buffered")
        self._offset = offset
        self._on_written = on_written

    async def add(self, data: bytes) -> None:
        """Copy `data` in; full buffers are queued for writing (waiting while `depth` writes are queued)."""
        view = memoryview(data)
        while view:
            if self._buffer is None:
                self._buffer = await self._free_buffer()
            taken = view[: len(self._buffer) - self._filled]
            self._buffer[self._filled : self._filled + len(taken)] = taken
            self._filled += len(taken)
            view = view[len(taken) :]
            if self._filled == len(self._buffer):
                await self.flush()

    async def receive(self, read_into: Callable[[memoryview], Awaitable[int]], limit: int | None = None) -> int:
        """Let `read_into(view)` fill the current buffer in place (at most `limit` bytes), as `add` would.

        No copy: the bytes land in the buffer that is then written. Returns the count `read_into` gave.
        """
        if self._buffer is None:
            self._buffer = await self._free_buffer()
        room = len(self._buffer) - self._filled
        if limit is not None:
            room = min(room, limit)
        with memoryview(self._buffer) as view:
            count = await read_into(view[self._filled : self._filled + room])
        self._filled += count
        if self._filled == len(self._buffer):
            await self.flush()
        return count

    async def flush(self) -> None:
        """Queue the buffered bytes for writing now."""
        if not self._filled:
            return
        while len(self._in_flight) >= self._depth:
            await self._settle_oldest()
        buffer, size, offset = self._buffer, self._filled, self._offset
        write = _Write(self._loop.run_in_executor(self._thread, self._write_in_order, buffer, size, offset))
        write.count_when_done(size, self._on_written)
        self._in_flight.append(write)
        self._buffer, self._filled = None, 0
        self._offset += size

    async def drain(self) -> None:
        """Write what is buffered, wait until every write has ended, then raise the first error, if any."""
        try:
            await self.flush()
        except Exception:
            pass  # a write error: raised below, once nothing is running
        while self._in_flight:
            try:
                await self._settle_oldest()
            except Exception:
                pass
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Let the thread end once idle. Call after `drain`."""
        self._thread.shutdown(wait=False)

    async def _settle_oldest(self) -> None:
        write = self._in_flight[0]
        try:
            await asyncio.shield(write.future)  # a started write always runs to its end
        finally:
            if write.future.done():
                self._in_flight.popleft()
        write.count()

    async def _free_buffer(self) -> bytearray:
        while not self._free:
            self._returned.clear()
            await self._returned.wait()
        return self._free.pop()

    def _give_back(self, buffer: bytearray) -> None:
        self._free.append(buffer)
        self._returned.set()

    def _write_in_order(self, buffer: bytearray, size: int, offset: int) -> None:
        def release() -> None:
            try:
                self._loop.call_soon_threadsafe(self._give_back, buffer)
            except RuntimeError:
                pass  # the loop is closed: nobody waits for buffers any more

        if self._error is not None:
            release()
            raise self._error
        try:
            self._write(memoryview(buffer)[:size], offset, release)
        except BaseException as exc:
            self._error = exc
            release()
            raise


class _Write:
    """One queued write. Counted exactly once, as soon as it has succeeded: by its done-callback, or by
    whoever awaits it first (writes end in order, and none succeeds after a failure)."""

    def __init__(self, future: asyncio.Future) -> None:
        self.future = future
        self._size = 0
        self._on_written: Callable[[int], None] | None = None

    def count_when_done(self, size: int, on_written: Callable[[int], None]) -> None:
        self._size, self._on_written = size, on_written
        self.future.add_done_callback(lambda _: self.count())

    def count(self) -> None:
        future = self.future
        if self._on_written is None or not future.done() or future.cancelled() or future.exception() is not None:
            return
        on_written, self._on_written = self._on_written, None
        on_written(self._size)
