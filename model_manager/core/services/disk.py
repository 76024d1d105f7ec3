"""The disks under the storage folders: free space, same filesystem or not, a full disk recognised, write-back."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sys
from pathlib import Path


def free_bytes(path: Path) -> int:
    """Bytes free to this process on the filesystem holding `path` (or its nearest existing parent)."""
    return shutil.disk_usage(nearest_existing(Path(path))).free


def same_filesystem(first: Path, second: Path) -> bool:
    """Whether a rename can move a file between the two paths (or their nearest existing parents)."""
    return os.stat(nearest_existing(Path(first))).st_dev == os.stat(nearest_existing(Path(second))).st_dev


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def nearest_existing(path: Path) -> Path:
    """`path` itself, or its nearest parent that exists (a folder not made yet, or on an unmounted drive)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_renameat2 = getattr(_libc, "renameat2", None)
if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_AT_FDCWD = -100


def rename_no_replace(source: str | Path, target: str | Path) -> None:
    """Rename `source` to `target`, atomically, and never over an existing file: FileExistsError instead.

    Uses renameat2(RENAME_NOREPLACE) where the kernel and filesystem have it, else a hard link followed
    by unlinking the source (link never replaces either); a folder there is checked, then renamed.
    Raises OSError (EXDEV across filesystems).
    """
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
            return
        error = ctypes.get_errno()
        if error not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # not this filesystem's: try a link
            raise OSError(error, os.strerror(error), str(source), None, str(target))
    if os.path.isdir(source) and not os.path.islink(source):  # no hard links for folders: check, then rename
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "File exists", str(target))
        os.rename(source, target)
        return
    os.link(source, target, follow_symlinks=False)
    try:
        os.unlink(source)
    except BaseException:
        os.unlink(target)  # the same inode: the source is still there
        raise


def start_write_back(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these just-written pages to the disk now, without waiting for it,
    so that a later fsync has little left to do instead of the whole file.

    `posix_fadvise(DONTNEED)` on dirty pages starts their write-back and keeps them in the page cache
    (only clean pages are dropped, and these are not clean yet), so they can still be hashed from there.
    """
    with contextlib.suppress(OSError, AttributeError):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
