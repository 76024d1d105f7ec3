"""Free disk space, and recognising a full disk."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


def free_bytes(path: Path) -> int:
    """Bytes free to this process on the filesystem holding `path` (or its nearest existing parent)."""
    return shutil.disk_usage(_existing(Path(path))).free


def same_filesystem(first: Path, second: Path) -> bool:
    return os.stat(_existing(Path(first))).st_dev == os.stat(_existing(Path(second))).st_dev


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
