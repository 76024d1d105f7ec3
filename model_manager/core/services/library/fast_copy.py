"""Copy a file's bytes into another file in one pass, hashing them beside the copy.

The bytes never pass through Python when the kernel can copy them: a reflink (`FICLONE`, instant on
btrfs or XFS) when the target is empty, else `os.copy_file_range` in chunks, while a second thread
hashes each chunk once it is copied, from the target's pages in the page cache (mapped, so hashlib
reads them in place: the hash is of the very bytes kept, and no buffer copy is made). The two run on
two cores, so the copy takes about max(copy, hash) instead of their sum. After a reflink the target's
pages are not cached, so the source is read and hashed instead; the source itself is never mapped
(a file cut short under a mapping kills the process with SIGBUS, and the source is not ours). Where
neither kernel copy works (an old kernel, some network filesystems) it reads, hashes and writes from
one buffer. Memory is one `HASH_BLOCK` buffer or mapping, whatever the file size. Write-back of each
copied chunk is started at once (`posix_fadvise(DONTNEED)` on dirty pages starts it and keeps them),
so the caller's final fsync has little left to do.

Blocking: call from a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Callable
from typing import Any, ContextManager

from model_manager.core.services.disk import start_write_back
from model_manager.core.services.page_hash import hash_pages

COPY_CHUNK = 8 * 1024 * 1024  # bytes per copy_file_range call; also how often the caller's guard runs
HASH_BLOCK = 8 * 1024 * 1024
_FICLONE = 0x40049409  # linux/fs.h
_NO_KERNEL_COPY = {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EBADF, errno.ENOTTY}


class SourceShrank(Exception):
    """The source ended before the number of bytes it was said to hold."""


def copy_hashing(
    source_fd: int,
    target_fd: int,
    target_offset: int,
    size: int,
    digest: Any,
    guard: Callable[[], ContextManager[None]] = contextlib.nullcontext,
) -> None:
    """Copy `size` bytes from the start of `source_fd` to `target_fd` at `target_offset`; `digest.update`
    gets every byte copied, in order (read from the target's pages when the target is open read-write).
    `guard()` wraps each chunk written (the caller's lock and checks).

    Raises SourceShrank, or OSError from either file (ENOSPC included).
    """
    if size <= 0:
        return
    if target_offset == 0 and _reflink(source_fd, target_fd, guard):
        _hash_range(source_fd, size, digest, threading.Event())
        return
    if not _kernel_copy_with_hash(source_fd, target_fd, target_offset, size, digest, guard):
        _copy_through_buffer(source_fd, target_fd, target_offset, size, digest, guard)


def _reflink(source_fd: int, target_fd: int, guard: Callable[[], ContextManager[None]]) -> bool:
    with guard():
        if os.fstat(target_fd).st_size != 0:
            return False
        try:
            fcntl.ioctl(target_fd, _FICLONE, source_fd)
        except OSError:
            return False  # ext4, tmpfs, another filesystem...: copy instead
    return True


def _kernel_copy_with_hash(
    source_fd: int, target_fd: int, target_offset: int, size: int, digest: Any, guard: Callable[[], ContextManager[None]]
) -> bool:
    """copy_file_range, with the hash on a thread a chunk behind it. False (nothing written) if the kernel cannot."""
    if not hasattr(os, "copy_file_range"):
        return False
    progress = _Progress()
    failure: list[BaseException] = []
    hasher: threading.Thread | None = None
    pages = _readable_copy_of(target_fd)

    def hash_copied() -> None:
        try:
            _hash_behind(progress, pages, source_fd, target_offset, size, digest)
        except BaseException as exc:  # reported below, after the copy
            failure.append(exc)
            progress.stop()

    done = 0
    try:
        while done < size and not failure:
            with guard():
                try:
                    count = os.copy_file_range(
                        source_fd, target_fd, min(COPY_CHUNK, size - done), done, target_offset + done
                    )
                except OSError as exc:
                    if done == 0 and exc.errno in _NO_KERNEL_COPY:
                        return False
                    raise
                if count == 0:
                    raise SourceShrank(f"the source ended after {done} of {size} bytes")
                start_write_back(target_fd, target_offset + done, count)
            done += count
            progress.copied(done)
            if hasher is None:  # started once the kernel copy is known to work
                hasher = threading.Thread(target=hash_copied, name="import-sha256", daemon=True)
                hasher.start()
    except BaseException:
        progress.stop()
        raise
    finally:
        if hasher is not None:
            hasher.join()
        if pages is not None:
            os.close(pages)
    if failure:
        raise failure[0]
    return True


class _Progress:
    """How far the copy is, for the hasher that follows it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._done = 0
        self._stopped = False

    def copied(self, done: int) -> None:
        with self._changed:
            self._done = done
            self._changed.notify()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()

    def beyond(self, hashed: int) -> int | None:
        """Wait until more than `hashed` bytes are copied; how many are, or None once the copy failed."""
        with self._changed:
            while self._done <= hashed and not self._stopped:
                self._changed.wait()
            return None if self._stopped else self._done


def _readable_copy_of(target_fd: int) -> int | None:
    """A descriptor of the target to map its pages from, or None when the target was opened write-only."""
    if fcntl.fcntl(target_fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDWR:
        return None
    return os.dup(target_fd)


def _hash_behind(progress: _Progress, pages: int | None, source_fd: int, target_offset: int, size: int, digest: Any) -> None:
    """Hash the bytes as the copy makes them: from the target's pages (`page_hash`), so the hash is of the
    very bytes kept; from the source through one buffer when the target cannot be mapped. The source is
    never mapped: it is not ours (see `page_hash`)."""
    buffer = memoryview(bytearray(HASH_BLOCK)) if pages is None else None
    hashed = 0
    while hashed < size:
        copied = progress.beyond(hashed)
        if copied is None:
            return
        while hashed < copied:
            count = min(HASH_BLOCK, copied - hashed)
            if pages is not None:
                try:
                    hash_pages(pages, target_offset + hashed, count, digest)
                except OSError:  # a filesystem without mmap: read the source instead
                    pages, buffer = None, memoryview(bytearray(HASH_BLOCK))
                    continue
            else:
                count = os.preadv(source_fd, [buffer[:count]], hashed)
                if count == 0:
                    raise SourceShrank(f"the source ended after {hashed} of {size} bytes")
                digest.update(buffer[:count])
            hashed += count


def _hash_range(source_fd: int, size: int, digest: Any, stop: threading.Event) -> None:
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    done = 0
    while done < size and not stop.is_set():
        count = os.preadv(source_fd, [view[: min(HASH_BLOCK, size - done)]], done)
        if count == 0:
            raise SourceShrank(f"the source ended after {done} of {size} bytes")
        digest.update(view[:count])
        done += count


def _copy_through_buffer(
    source_fd: int, target_fd: int, target_offset: int, size: int, digest: Any, guard: Callable[[], ContextManager[None]]
) -> None:
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    done = 0
    while done < size:
        count = os.preadv(source_fd, [view[: min(HASH_BLOCK, size - done)]], done)
        if count == 0:
            raise SourceShrank(f"the source ended after {done} of {size} bytes")
        digest.update(view[:count])
        with guard():
            written = 0
            while written < count:
                written += os.pwrite(target_fd, view[written:count], target_offset + done + written)
        done += count
