"""Blocking file helpers of the library: path checks, hashing, fsync, removal, sizes, file names, a full disk.

Call them in a worker thread. The other modules of the library call them through this module
(`files.hash_file(...)`), never under a name imported on its own, so that replacing one here reaches
every caller: the tests do, to check that none of them runs on the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

from model_manager.core.catalogue import FileToRemove
from model_manager.core.errors import InsufficientStorageError, InvalidFileError
from model_manager.core.gguf_format import is_gguf_filename, parse_split_name
from model_manager.core.services.disk import (  # noqa: F401 (callers use files.same_filesystem, files.rename_no_replace)
    is_disk_full,
    rename_no_replace,
    same_filesystem,
)
# Reading a header blocks too: the other modules call it as files.read_gguf_header, like the helpers below.
from model_manager.core.gguf_format import read_gguf_header  # noqa: F401

CHUNK_SIZE = 8 * 1024 * 1024
FREE_SPACE_MARGIN_BYTES = 64 * 1024 * 1024  # left free after a copy, so the disk never fills to the last byte
MAX_NAME_BYTES = 200
MAX_DISPLAY_NAME = 200


def is_within(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


FileIdentity = tuple[int, int]  # (st_dev, st_ino): the same file whatever path spells it


def identity(path: str | Path) -> FileIdentity | None:
    """The identity of the file at `path` (links followed), or None when there is none."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def real_path(path: str | Path) -> Path:
    """`path` with every symlink resolved: the one spelling the library compares folders in."""
    return Path(os.path.realpath(path))


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)


def changed_error(name: str) -> InvalidFileError:
    return InvalidFileError(
        f"{name} changed while it was being imported; import it again once nothing is writing to it", {"file": name}
    )


def hash_file(path: Path, expected: os.stat_result) -> str:
    """The SHA-256 of `path`, read in chunks; `InvalidFileError` when it is no longer the file `expected` describes."""
    with open(path, "rb") as file:
        if not same_file(os.fstat(file.fileno()), expected):
            raise changed_error(path.name)
        return hashlib.file_digest(file, "sha256").hexdigest()


def fsync_files(paths: Iterable[Path]) -> None:
    for path in paths:
        with open(path, "rb") as file:
            os.fsync(file.fileno())


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_files(paths: Iterable[str | Path]) -> None:
    """Unlink each path that exists (never following a link) and fsync the folders touched."""
    folders = set()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            folders.add(Path(path).parent)
    for folder in folders:
        with contextlib.suppress(OSError):
            fsync_dir(folder)


def as_they_are(paths: Iterable[str | Path]) -> list[FileToRemove]:
    """The regular files at `paths` (links not followed), each with its identity and size as of now."""
    found = []
    for path in paths:
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            found.append(FileToRemove(str(path), info.st_dev, info.st_ino, info.st_size, info.st_ctime_ns))
    return found


def remove_if_unchanged(doomed: Iterable[FileToRemove]) -> list[str]:
    """Unlink each file that is still the one noted (same identity, size and change time); returns the
    paths of those that were not, which are kept: a file put there since is somebody else's."""
    kept = []
    removing = []
    for file in doomed:
        now = as_they_are([file.path])
        if now == [file]:
            removing.append(file.path)
        elif now:
            kept.append(file.path)
    remove_files(removing)
    return kept


def regular_size(path: str | Path) -> int | None:
    """The size of the regular file at `path` (following links), or None when there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def tree_size(path: str | Path) -> int:
    """Bytes of the regular files at or under `path`, never following a link."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(info.st_mode):
        return info.st_size if stat.S_ISREG(info.st_mode) else 0
    total = 0
    for root, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            with contextlib.suppress(OSError):
                entry = os.lstat(os.path.join(root, name))
                total += entry.st_size if stat.S_ISREG(entry.st_mode) else 0
    return total


def is_empty_dir(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def safe_name(filename: str) -> str:
    """`filename`'s base name, fit for MODELS_DIR: no folders, no leading dots, no control characters, ends `.gguf`."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().lstrip(".").strip()
    if not is_gguf_filename(name):
        raise InvalidFileError(f"{filename!r} is not a GGUF file name: the name must end in .gguf", {"filename": filename})
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidFileError(f"the file name is longer than {MAX_NAME_BYTES} bytes; rename the file", {"filename": filename})
    return name


def name_key(name: str) -> str:
    """What two file names must differ in to live side by side on any filesystem: NFC form, case folded."""
    return unicodedata.normalize("NFC", name).casefold()


def numbered(name: str, number: int) -> str:
    """`name` itself for 1, else `name-<number>.gguf`; a split part keeps its `-0000i-of-0000n` ending."""
    if number == 1:
        return name
    split = parse_split_name(name)
    if split is not None:
        return f"{split.stem}-{number}-{split.index:05d}-of-{split.count:05d}.gguf"
    return f"{name[:-5]}-{number}{name[-5:]}"


def choose_display_name(display_name: str | None, filename: str) -> str:
    text = " ".join((display_name or "").split())[:MAX_DISPLAY_NAME]
    return text or filename[:-5]


@contextlib.contextmanager
def disk_full_is_insufficient_storage(folder: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        if is_disk_full(error):
            raise InsufficientStorageError(
                f"the disk holding {folder} is full; free some space (POST /local/storage/cleanup, or delete models)"
            ) from error
        raise
