"""Copy a file's bytes into another file in one pass, hashing the source beside the copy.

The bytes never pass through Python when the kernel can copy them: a reflink (`FICLONE`, instant on
btrfs or XFS) when the target is empty, else `os.copy_file_range` in large chunks, while a second
thread reads the source (from the page cache, usually) into one reused buffer and hashes it. The two
run on two cores, so the copy takes about max(copy, hash) instead of their sum. Where neither works
(an old kernel, some network filesystems) it reads, hashes and writes from one buffer. Memory is one
`HASH_BLOCK` buffer, whatever the file size. Write-back of each copied chunk is started at once
(`posix_fadvise(DONTNEED)` on dirty pages starts it), so the caller's final fsync has little left to do.

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

COPY_CHUNK = 64 * 1024 * 1024  # bytes per copy_file_range call; also how often the caller's guard runs
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
    gets every source byte in order. `guard()` wraps each chunk written (the caller's lock and checks).

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
    """copy_file_range with the hash on a thread beside it. False (nothing written) if the kernel cannot."""
    if not hasattr(os, "copy_file_range"):
        return False
    stop = threading.Event()
    failure: list[BaseException] = []

    def hash_source() -> None:
        try:
            _hash_range(source_fd, size, digest, stop)
        except BaseException as exc:  # reported below, after the copy
            failure.append(exc)

    hasher: threading.Thread | None = None
    done = 0
    try:
        while done < size:
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
                _start_write_back(target_fd, target_offset + done, count)
            done += count
            if hasher is None:  # started once the kernel copy is known to work
                hasher = threading.Thread(target=hash_source, name="import-sha256", daemon=True)
                hasher.start()
    except BaseException:
        stop.set()
        raise
    finally:
        if hasher is not None:
            hasher.join()
    if failure:
        raise failure[0]
    return True


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


def _start_write_back(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these dirty pages now, without waiting for it."""
    with contextlib.suppress(OSError, AttributeError):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
