"""The disks under the storage folders: free space, same filesystem or not, a full disk recognised."""

from __future__ import annotations

import errno
import os
import shutil
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
