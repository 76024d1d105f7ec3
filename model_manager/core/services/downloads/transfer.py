"""Fetch one file over HTTP into its partial file: resumable, in parallel ranges when large, hashed on the way.

A small file (or one of unknown size) comes over one connection; a large one is cut into parts that
several connections fetch at once, like `aria2c -x` or `hf_transfer`, because CDNs cap the speed of one
connection (`scheduling.py` decides which part goes to which connection, and how many connections).
The redirect to the CDN is followed once; the parts then go straight to the URL it pointed to.

A dropped connection, a read stall, a 5xx or a 429 is retried with exponential backoff and a `Range`
request that continues where the part's bytes end, with `If-Range` so that a file that changed upstream
is noticed instead of being stitched together from two versions.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx

from model_manager.core.config import Settings
from model_manager.core.services.downloads.body import DirectBody
from model_manager.core.services.downloads.digest import OrderedSha256
from model_manager.core.services.downloads.partial import Part, PartialFile
from model_manager.core.services.downloads.scheduling import PROBE_SECONDS, PartScheduler, plan_parts
from model_manager.core.services.downloads.writer import ConnectionWriter

MIB = 1024 * 1024
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_MAX_BACKOFF_SECONDS = 60.0
LARGE_FILE_BYTES = 512 * MIB  # from this size on, a parallel download starts with four connections
_FLUSH_SECONDS = 0.25  # longest time received bytes wait in memory before being written
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class TransferOptions:
    """How a file is fetched. `from_settings` reads them from the service settings."""

    connections: int = 8
    parallel_threshold: int = 64 * MIB
    max_retries: int = 8
    retry_base_seconds: float = 1.0
    buffer_bytes: int = 1 * MIB  # bytes gathered from the socket before one write (one connection)
    parallel_buffer_bytes: int = 512 * 1024  # the same for each of several connections: memory stays flat
    checkpoint_seconds: float = 1.0  # how often the parts are saved; a crash re-fetches at most this much
    min_part_bytes: int = 1 * MIB  # parts are never planned or split smaller than this

    @classmethod
    def from_settings(cls, settings: Settings) -> TransferOptions:
        return cls(
            connections=settings.download_connections,
            parallel_threshold=settings.download_parallel_threshold_bytes,
            max_retries=settings.download_max_retries,
            retry_base_seconds=settings.download_retry_base_seconds,
        )


@dataclass(frozen=True)
class FileSource:
    """Where a file comes from: the Hub's resolve URL, the headers for the Hub host only, its size if known."""

    url: str
    hub_headers: dict[str, str]
    size: int | None


class TransferError(Exception):
    """The transfer cannot go on; the message says why in words a user can act on."""


class UpstreamChangedError(TransferError):
    """The file on the server is no longer the one whose bytes are on disk."""


class _Retry(Exception):
    """A failure worth another attempt (5xx, 429, an expired CDN link...)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _RangeIgnored(Exception):
    """The server answered a ranged request with the whole file."""


class FileTransfer:
    """Fetches one file into `partial` and returns its SHA-256. Progress: `bytes_completed`."""

    def __init__(
        self, client: httpx.AsyncClient, source: FileSource, partial: PartialFile, options: TransferOptions
    ) -> None:
        self._client = client
        self._source = source
        self._partial = partial
        self._options = options
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="download-io")  # checkpoints, hash
        self._digest: OrderedSha256 | None = None
        self._target: str | None = None  # the resolved (CDN) URL that parallel parts are fetched from
        self._resolving = asyncio.Lock()

    @property
    def bytes_completed(self) -> int:
        return self._partial.bytes_completed

    @property
    def total_bytes(self) -> int | None:
        return self._partial.size

    async def run(self) -> str:
        """Fetch every missing byte and return the file's SHA-256 (hex).

        Raises TransferError (with a message for the user), or OSError from the disk (ENOSPC included).
        The saved state is checkpointed on the way and on exit, cancellation included.
        """
        partial = self._partial
        if not partial.parts:
            options = self._options
            partial.parts = plan_parts(
                partial.size, options.connections, options.parallel_threshold, options.min_part_bytes
            )
        self._start_digest()
        finished = False
        checkpoints = asyncio.create_task(self._checkpoint_every_interval())
        try:
            try:
                await self._fetch_all()
            except _RangeIgnored:
                # The server does not do ranges: start over on one connection from the first byte.
                await self._restart_from_scratch()
                await self._fetch_all()
            sha256 = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._digest.finish, partial.size or 0
            )
            finished = True
            return sha256
        finally:
            checkpoints.cancel()
            if not finished:
                self._digest.abort()
            try:
                await self._checkpoint()
            finally:
                # Nothing may touch the files once run() returns: the caller may delete them.
                await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    # ------------------------------------------------------------ plan

    async def _fetch_all(self) -> None:
        parts = self._partial.parts
        if all(part.done for part in parts):
            return
        if len(parts) == 1 and parts[0].offset == 0:
            writer = self._writer(self._options.buffer_bytes)
            try:
                await self._fetch_part(parts[0], writer)
            finally:
                writer.close()
            return
        await self._resolve_target()
        # A large file starts on four connections: two probes less when a CDN caps each connection (0.86x
        # aria2c -x8 at 50 MB/s per connection, against 1.16-1.33x starting from two), and little lost when
        # one would do (the others' bytes are hashed back from the page cache; it falls back to four).
        large = (self._partial.size or 0) >= LARGE_FILE_BYTES
        scheduler = PartScheduler(
            parts, self._options.connections, self._options.min_part_bytes, initial=4 if large else 1
        )
        loop = asyncio.get_running_loop()
        workers: set[asyncio.Task] = set()
        try:
            while True:
                wanted = scheduler.observe(loop.time(), sum(part.received for part in parts))
                while len(workers) < wanted and scheduler.has_unassigned_work:
                    # The first connection, the one that stays when more do not pay, gets large buffers.
                    buffer_bytes = self._options.parallel_buffer_bytes if workers else self._options.buffer_bytes
                    workers.add(asyncio.create_task(self._worker(scheduler, buffer_bytes)))
                if not workers:
                    return
                done, workers = await asyncio.wait(
                    workers, timeout=PROBE_SECONDS / 2, return_when=asyncio.FIRST_EXCEPTION
                )
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, scheduler: PartScheduler, buffer_bytes: int) -> None:
        writer = self._writer(buffer_bytes)
        scheduler.running += 1
        try:
            while (part := scheduler.next_part()) is not None:
                part.busy = True
                try:
                    await self._fetch_part(part, writer)
                finally:
                    part.busy = False
        finally:
            scheduler.running -= 1
            writer.close()

    def _writer(self, buffer_bytes: int) -> ConnectionWriter:
        return ConnectionWriter(self._write_blocking, buffer_bytes)

    async def _restart_from_scratch(self) -> None:
        def reset() -> None:
            if self._digest is not None:
                self._digest.abort_and_wait()  # the hash maps the file: it must let go before the file is cut
            self._partial.reset([Part(0, self._partial.size)])

        await asyncio.get_running_loop().run_in_executor(self._executor, reset)
        self._start_digest()

    def _start_digest(self) -> None:
        written = [(p.offset, p.offset + p.completed) for p in self._partial.parts if p.completed]
        self._digest = OrderedSha256(self._partial.data_path, written)

    # ------------------------------------------------------------ one part, with retries

    async def _fetch_part(self, part: Part, writer: ConnectionWriter) -> None:
        attempts = 0
        while not part.done:
            before = part.completed
            try:
                finished = await self._stream_part(part, writer)
                if finished:
                    return
                problem = "the connection closed before the end of the data"
                retry_after = None
            except httpx.TransportError as exc:  # dropped connection, read stall, refused...
                problem, retry_after = _describe(exc), None
            except _Retry as exc:
                problem, retry_after = str(exc), exc.retry_after
            if part.completed > before:
                attempts = 0  # progress was made: this is a new failure, not the same one again
            attempts += 1
            if attempts > self._options.max_retries:
                raise TransferError(f"gave up after {attempts} attempts in a row: {problem}")
            await asyncio.sleep(self._backoff(attempts, retry_after))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _MAX_BACKOFF_SECONDS)
        delay = self._options.retry_base_seconds * 2 ** (attempt - 1)
        return min(delay, _MAX_BACKOFF_SECONDS) * random.uniform(0.5, 1.0)

    async def _stream_part(self, part: Part, writer: ConnectionWriter) -> bool:
        """One request for the rest of `part`. True when the part is complete (or the file ended)."""
        part.received = part.completed
        start = part.offset + part.completed
        single = len(self._partial.parts) == 1 and part.offset == 0
        headers = {"Accept-Encoding": "identity"}
        if not single or start > 0:
            last = "" if part.end is None else str(part.end - 1)
            headers["Range"] = f"bytes={start}-{last}"
            if self._partial.validator and start > 0:
                headers["If-Range"] = self._partial.validator
        url, auth = await self._url_for(single)
        async with self._client.stream("GET", url, headers={**auth, **headers}, follow_redirects=True) as response:
            await self._check_response(response, part, start, single)
            if self._partial.validator is None:
                self._partial.validator = _validator(response)
            eof = await self._receive(response, part, writer)
        if part.size is None and eof:
            part.size = part.completed  # a file of unknown size ends where the body ended
            self._partial.size = part.completed
        return part.done

    async def _url_for(self, single: bool) -> tuple[str, dict[str, str]]:
        if single:
            return self._source.url, self._source.hub_headers
        target = self._target or await self._resolve_target()
        return target, self._auth_for(target)

    def _auth_for(self, url: str) -> dict[str, str]:
        """The Hub's headers for a URL on the Hub's own origin; nothing for another host (the CDN)."""
        if _origin(url) == _origin(self._source.url):
            return self._source.hub_headers
        return {}

    async def _resolve_target(self) -> str:
        """Follow the Hub's redirect once; parallel parts then go straight to the URL it points to."""
        async with self._resolving:
            attempts = 0
            while self._target is None:
                try:
                    headers = {**self._source.hub_headers, "Range": "bytes=0-0", "Accept-Encoding": "identity"}
                    async with self._client.stream(
                        "GET", self._source.url, headers=headers, follow_redirects=True
                    ) as response:
                        await self._check_response(response, None, 0, False)
                        await response.aread()  # one byte; lets the connection go back to the pool
                        if self._partial.validator is None:
                            self._partial.validator = _validator(response)
                        self._target = str(response.url)
                except (httpx.TransportError, _Retry) as exc:
                    attempts += 1
                    if attempts > self._options.max_retries:
                        raise TransferError(f"gave up after {attempts} attempts in a row: {_describe(exc)}") from exc
                    await asyncio.sleep(self._backoff(attempts, getattr(exc, "retry_after", None)))
            return self._target

    async def _check_response(self, response: httpx.Response, part: Part | None, start: int, single: bool) -> None:
        status = response.status_code
        on_hub = _origin(str(response.url)) == _origin(self._source.url)
        where = "the Hub" if on_hub else "the download server"
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
            if match is None or int(match[1]) != start:
                raise TransferError(f"{where} answered with other bytes than the range asked for")
            self._learn_size(None if match[3] == "*" else int(match[3]))
            return
        if status == 200:
            length = response.headers.get("content-length")
            if single and start == 0:
                self._learn_size(int(length) if length and length.isdigit() else None)
                return
            validator = _validator(response)
            if self._partial.validator and validator and validator != self._partial.validator:
                raise UpstreamChangedError(
                    "the file changed on the Hub while it was being downloaded; request the download again"
                )
            raise _RangeIgnored()
        if status in _RETRY_STATUSES:
            raise _Retry(f"{where} answered HTTP {status}", _retry_after(response))
        if not on_hub and status in (401, 403, 404, 410):
            self._target = None  # a signed CDN link expired: ask the Hub for a fresh one
            raise _Retry(f"the download link expired (HTTP {status}); asking the Hub for a new one")
        if status in (401, 403):
            raise TransferError(
                f"the Hub refused access to the file (HTTP {status}); set HF_TOKEN to a token that may read this repo"
            )
        if status == 404:
            raise TransferError("the file is no longer on the Hub (HTTP 404)")
        if status == 416:
            raise UpstreamChangedError("the file on the Hub is smaller than expected; request the download again")
        raise TransferError(f"{where} answered HTTP {status}")

    def _learn_size(self, total: int | None) -> None:
        partial = self._partial
        if total is None:
            return
        if partial.size is None:
            partial.size = total
            for part in partial.parts:
                if part.size is None:
                    part.size = total - part.offset
        elif total != partial.size:
            raise UpstreamChangedError(
                f"the file on the Hub is {total} bytes, not the {partial.size} announced; request the download again"
            )

    # ------------------------------------------------------------ bytes

    async def _receive(self, response: httpx.Response, part: Part, writer: ConnectionWriter) -> bool:
        """Write the body into the part up to the part's end (which a split may move). True if the body ended.

        What h11 has buffered comes through httpx; the rest, when the body has a Content-Length, straight
        from the socket into the writer's buffers (`body.py`), which spares the event loop four copies.
        """
        loop = asyncio.get_running_loop()
        flush_at = loop.time() + _FLUSH_SECONDS
        ended: bool | None = False

        def count(size: int) -> None:
            part.completed += size

        writer.start(part.offset + part.received, count)
        chunks = response.aiter_raw().__aiter__()
        direct: DirectBody | None = None
        try:
            while True:
                room = None if part.end is None else part.end - part.offset - part.received
                if direct is None:
                    direct = DirectBody.of(response)
                if direct is not None and direct.remaining > 0:
                    if room == 0:
                        ended = None  # the part is full; the rest of the body belongs to another part
                        break
                    size = await writer.receive(direct.read_into, room)
                    part.received += size
                else:
                    try:
                        raw = await chunks.__anext__()
                    except StopAsyncIteration:
                        ended = True
                        break
                    if room is not None and len(raw) >= room:
                        raw = raw[:room]
                        ended = None  # the part is full; the rest of the body belongs to another part
                    part.received += len(raw)
                    await writer.add(raw)
                    if ended is None:
                        break
                if loop.time() >= flush_at:
                    # A slow link still writes (so counts progress and checkpoints) several times a second.
                    await writer.flush()
                    flush_at = loop.time() + _FLUSH_SECONDS
        finally:
            await writer.drain()  # bytes received before a drop or a cancel are kept
        return bool(ended)

    def _write_blocking(self, view: memoryview, offset: int, release: Callable[[], None]) -> None:
        self._partial.write(view, offset)
        self._digest.written(offset, view, release)  # hashed from the buffer, then released

    # ------------------------------------------------------------ checkpoints

    async def _checkpoint_every_interval(self) -> None:
        while True:
            await asyncio.sleep(self._options.checkpoint_seconds)
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        snapshot = self._partial.snapshot()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._partial.save, snapshot)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _validator(response: httpx.Response) -> str | None:
    """A strong ETag, else Last-Modified: what If-Range may carry."""
    etag = response.headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("last-modified")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"the connection stalled ({type(exc).__name__})"
    return f"the connection failed ({text})"
