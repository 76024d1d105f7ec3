"""The local library: model files in MODELS_DIR and their rows in the catalogue, kept in agreement.

Crash safety. A model enters the library in this order, and a crash between any two steps leaves
either no model or a complete one once `reconcile()` has run at the next start:

1. its bytes go to a hidden staging file in MODELS_DIR (`.importing-<uuid>.part`), hashed while written,
   then fsynced (a same-filesystem `move` and a same-filesystem download skip this: nothing is copied);
2. a `pending` row naming the final path(s) is committed (SQLite, synchronous=FULL);
3. each file is renamed into place (`os.replace`, atomic) and the directory fsynced;
4. the row becomes `ready`; only then is a cross-filesystem `move` source removed.

`reconcile()` removes staging files (1), drops pending rows whose files are not all there with the
recorded size and removes those of their files that are (2, or a split model caught between renames),
and marks pending rows whose files are complete ready (3). A model leaves in the opposite order: its row
is deleted first, then its files, so a crash can only leave orphaned files, which `cleanup` removes.
Ready rows whose files are missing are never dropped at start (their drive may be unmounted); `cleanup`
drops them, except when their folder is missing or empty.

Concurrency. Dedupe check, naming, insert, renames and the ready mark run as one step in a worker thread
under an asyncio lock (deletes and cleanup take the same lock), so a pending row never outlives that step
in a running process; the unique hash index is the final guard against duplicates.

Every blocking call (hashing, copying, stat, header reading, fsync, SQLite) runs in a worker thread, and
files are read in chunks, never whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import itertools
import logging
import os
import shutil
import sqlite3
import stat
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from uuid import uuid4

from model_manager.core.catalogue import Catalogue, ModelRecord, utc_now
from model_manager.core.config import Settings
from model_manager.core.errors import (
    FileInUseError,
    InsufficientStorageError,
    InvalidFileError,
    ModelNotFoundError,
    PathNotAllowedError,
    SourceFileNotFoundError,
)
from model_manager.core.gguf_format import (
    GGUFHeader,
    is_gguf_filename,
    parse_split_name,
    read_gguf_header,
    summarize_metadata,
)
from model_manager.core.models import CleanupResult, LocalModel, LocalModelSort, StorageStats

logger = logging.getLogger("model_manager.local_storage")

CHUNK_SIZE = 8 * 1024 * 1024
FREE_SPACE_MARGIN_BYTES = 64 * 1024 * 1024  # left free after a copy, so the disk never fills to the last byte
STAGING_PREFIX = ".importing-"
STAGING_SUFFIX = ".part"
MAX_NAME_BYTES = 200
MAX_DISPLAY_NAME = 200
# Download states whose partial files a later run may still resume (DOWNLOADS_DIR/<download_id>...).
RESUMABLE_DOWNLOAD_STATES = ("pending", "downloading", "verifying", "failed")
_GIB = 1024**3

T = TypeVar("T")


# ------------------------------------------------------------------ small file helpers (blocking)


def _is_within(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)


def _same_filesystem(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def _changed_error(name: str) -> InvalidFileError:
    return InvalidFileError(
        f"{name} changed while it was being imported; import it again once nothing is writing to it", {"file": name}
    )


def _hash_file(path: Path, expected: os.stat_result) -> str:
    """The SHA-256 of `path`, read in chunks; `InvalidFileError` when it is no longer the file `expected` describes."""
    with open(path, "rb") as file:
        if not _same_file(os.fstat(file.fileno()), expected):
            raise _changed_error(path.name)
        return hashlib.file_digest(file, "sha256").hexdigest()


def _fsync_files(paths: Iterable[Path]) -> None:
    for path in paths:
        with open(path, "rb") as file:
            os.fsync(file.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_files(paths: Iterable[str | Path]) -> None:
    """Unlink each path that exists (never following a link) and fsync the folders touched."""
    folders = set()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            folders.add(Path(path).parent)
    for folder in folders:
        with contextlib.suppress(OSError):
            _fsync_dir(folder)


def _regular_size(path: str | Path) -> int | None:
    """The size of the regular file at `path` (following links), or None when there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _tree_size(path: str | Path) -> int:
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


def _is_empty_dir(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def _safe_name(filename: str) -> str:
    """`filename`'s base name, fit for MODELS_DIR: no folders, no leading dots, no control characters, ends `.gguf`."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().lstrip(".").strip()
    if not is_gguf_filename(name):
        raise InvalidFileError(f"{filename!r} is not a GGUF file name: the name must end in .gguf", {"filename": filename})
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidFileError(f"the file name is longer than {MAX_NAME_BYTES} bytes; rename the file", {"filename": filename})
    return name


def _numbered(name: str, number: int) -> str:
    """`name` itself for 1, else `name-<number>.gguf`; a split part keeps its `-0000i-of-0000n` ending."""
    if number == 1:
        return name
    split = parse_split_name(name)
    if split is not None:
        return f"{split.stem}-{number}-{split.index:05d}-of-{split.count:05d}.gguf"
    return f"{name[:-5]}-{number}{name[-5:]}"


def _display_name(display_name: str | None, filename: str) -> str:
    text = " ".join((display_name or "").split())[:MAX_DISPLAY_NAME]
    return text or filename[:-5]


@contextlib.contextmanager
def _disk_full_is_insufficient_storage(folder: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorageError(
                f"the disk holding {folder} is full; free some space (POST /local/storage/cleanup, or delete models)"
            ) from error
        raise


async def _in_thread_to_completion(func: Callable[..., T], *args: Any) -> T:
    """Run `func` in a worker thread. If the caller is cancelled, wait for `func` to finish before the
    cancellation goes on, so that a lock held around this call still covers all of `func`."""
    task = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


# ------------------------------------------------------------------ staging


class _StagingFile:
    """A hidden file in MODELS_DIR that receives a model's bytes and hashes them as they are written.

    Methods block: call them in a worker thread. A lock makes `discard` wait for a write in flight.
    The path is in `registry` (the storage's live staging files) for as long as the file may exist.
    """

    def __init__(self, folder: Path, registry: set[str]) -> None:
        self.path = folder / f"{STAGING_PREFIX}{uuid4().hex}{STAGING_SUFFIX}"
        self.size_bytes = 0
        self._registry = registry
        self._hash = hashlib.sha256()
        self._lock = threading.Lock()
        registry.add(str(self.path))  # before the file exists, so cleanup never takes it for an orphan
        try:
            self._file = open(self.path, "xb")
        except BaseException:
            registry.discard(str(self.path))
            raise

    def write(self, chunks: Iterable[bytes | memoryview]) -> None:
        with self._lock, _disk_full_is_insufficient_storage(self.path.parent):
            if self._file.closed:
                raise InvalidFileError("the import was stopped before the file was complete")
            for chunk in chunks:
                self._file.write(chunk)
                self._hash.update(chunk)
                self.size_bytes += len(chunk)

    def copy_from(self, source: Path, expected: os.stat_result) -> None:
        """Append the bytes of `source`, which must still be the file `expected` describes."""
        with open(source, "rb", buffering=0) as src:
            if not _same_file(os.fstat(src.fileno()), expected):
                raise _changed_error(source.name)
            buffer = bytearray(CHUNK_SIZE)
            view = memoryview(buffer)
            while count := src.readinto(buffer):
                self.write((view[:count],))

    def finish(self) -> str:
        """Flush and fsync the file, close it, and return the SHA-256 of everything written."""
        with self._lock, _disk_full_is_insufficient_storage(self.path.parent):
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        return self._hash.hexdigest()

    def placed(self) -> None:
        """The file was renamed into the library: it is no longer a staging file."""
        self._registry.discard(str(self.path))

    def discard(self) -> None:
        with self._lock:
            self._file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self._registry.discard(str(self.path))


@dataclass
class _Incoming:
    """One file to rename into MODELS_DIR under (a free variant of) `name`."""

    source: Path
    name: str
    sha256: str
    size_bytes: int
    staging: _StagingFile | None = None  # set when `source` is our own staged copy
    unchanged_since: os.stat_result | None = None  # a client's file renamed in place must still be this one


@dataclass
class _Source:
    """An import source that passed every check: its real path, the name it will get, and its header."""

    path: Path
    name: str
    stat: os.stat_result
    header: GGUFHeader


@dataclass
class _NewModel:
    """What the row of a model being added says besides its files."""

    display_name: str
    metadata: dict[str, Any]
    original_repo_id: str | None = None
    is_downloaded: bool = False


@dataclass
class StagedUpload:
    """An uploaded file, written to a staging file in MODELS_DIR and checked, that `register_upload` adds."""

    incoming: _Incoming
    metadata: dict[str, Any]


def _to_api(record: ModelRecord) -> LocalModel:
    return LocalModel(
        model_id=record.model_id,
        original_repo_id=record.original_repo_id,
        display_name=record.display_name,
        file_path=record.file_path,
        file_size_bytes=record.file_size_bytes,
        file_hash=record.file_hash,
        imported_at=record.imported_at,
        last_accessed=record.last_accessed,
        metadata=record.metadata,
        is_downloaded=record.is_downloaded,
    )


def _matches(model: LocalModel, needle: str) -> bool:
    haystack = (model.display_name, model.original_repo_id or "", Path(model.file_path).name, model.metadata.get("name") or "")
    return any(needle in text.casefold() for text in haystack)


def _sorted(models: list[LocalModel], sort: LocalModelSort) -> list[LocalModel]:
    if sort is LocalModelSort.name:
        return sorted(models, key=lambda m: (m.display_name.casefold(), m.model_id))
    if sort is LocalModelSort.size:
        return sorted(models, key=lambda m: -m.file_size_bytes)
    if sort is LocalModelSort.last_accessed:
        never = [m for m in models if m.last_accessed is None]
        seen = sorted((m for m in models if m.last_accessed is not None), key=lambda m: m.last_accessed, reverse=True)
        return seen + never
    return models  # imported: the catalogue's order, oldest first


# ------------------------------------------------------------------ the service


class LocalStorage:
    """The library of model files. Create one per process; every method is safe to call concurrently."""

    def __init__(self, settings: Settings, catalogue: Catalogue) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.models_dir = Path(os.path.abspath(settings.models_dir))
        self.downloads_dir = Path(os.path.abspath(settings.downloads_dir))
        self._data_dir = os.path.abspath(settings.data_dir)
        catalogue_file = os.path.abspath(settings.catalogue_file)
        # Files cleanup must never take, even when someone points MODEL_MANAGER_DATA_DIR at MODELS_DIR.
        self._protected = {os.path.abspath(settings.token_file)} | {
            catalogue_file + suffix for suffix in ("", "-wal", "-shm", "-journal")
        }
        self._lock = asyncio.Lock()
        self._staging: set[str] = set()
        self._in_use: Counter[str] = Counter()

    # ------------------------------------------------------------ start

    async def reconcile(self) -> None:
        """Finish or roll back what a crash left half done (see the module docstring). Called once at start."""
        async with self._lock:
            await _in_thread_to_completion(self._reconcile)

    def _reconcile(self) -> None:
        if not self.models_dir.is_dir():
            logger.warning("MODELS_DIR %s does not exist; nothing to reconcile", self.models_dir)
            return
        with os.scandir(self.models_dir) as entries:
            stale = [e.path for e in entries if e.name.startswith(STAGING_PREFIX) and e.path not in self._staging]
        if stale:
            logger.info("removing %d staging file(s) of imports a crash interrupted", len(stale))
            _remove_files(stale)
        records = self.catalogue.list_models(include_pending=True)
        unavailable = self._unavailable_folders(records)
        for record in records:
            if record.state != "pending" or Path(record.file_path).parent.as_posix() in unavailable:
                continue
            if self._files_complete(record):
                self.catalogue.mark_model_ready(record.model_id)
                logger.info("finished adding %s, interrupted after its files were in place", record.file_path)
            else:
                self.catalogue.delete_model(record.model_id)
                _remove_files(record.all_paths)
                logger.info("rolled back adding %s, interrupted before its files were in place", record.file_path)
        missing = [r for r in records if r.state == "ready" and not self._files_present(r)]
        if missing:
            logger.warning(
                "%d model(s) have missing files (an unmounted drive?); they stay listed, and "
                "POST /local/storage/cleanup removes their entries: %s",
                len(missing), ", ".join(r.file_path for r in missing[:10]),
            )

    @staticmethod
    def _files_present(record: ModelRecord) -> bool:
        return all(_regular_size(path) is not None for path in record.all_paths)

    @staticmethod
    def _files_complete(record: ModelRecord) -> bool:
        sizes = [_regular_size(path) for path in record.all_paths]
        return None not in sizes and sum(sizes) == record.file_size_bytes

    def _unavailable_folders(self, records: list[ModelRecord]) -> set[str]:
        """Folders of ready models that are missing or empty: probably an unmounted drive, never a reason to forget them."""
        folders = {Path(path).parent.as_posix() for r in records if r.state == "ready" for path in r.all_paths}
        return {folder for folder in folders if not os.path.isdir(folder) or _is_empty_dir(folder)}

    # ------------------------------------------------------------ import from a server path

    async def import_file(
        self, file_path: str, action: Literal["copy", "move"] = "copy", display_name: str | None = None
    ) -> tuple[LocalModel, bool]:
        """Add the GGUF file at `file_path` (absolute, on this server) to the library.

        Returns `(model, created)`: when a model with the same SHA-256 is already there, that model and
        False, and nothing is copied or moved. `move` renames the file on the same filesystem and removes
        the source only after the model is registered otherwise; the source is never removed on failure.
        A part of a split model is imported as a model of its own: importing all parts as one is out of scope.

        Raises `PathNotAllowedError` for a relative path, `..`, or a real path (symlinks resolved) outside
        IMPORT_ALLOWED_DIRS — checked before existence, so nothing is revealed about other folders;
        `SourceFileNotFoundError` when it does not exist; `InvalidFileError` when it is not a regular file,
        not named `.gguf`, not a readable GGUF file, or changes while imported; `InsufficientStorageError`.
        """
        source = await asyncio.to_thread(self._inspect_source, file_path, action)
        digest = await asyncio.to_thread(_hash_file, source.path, source.stat)
        existing = await asyncio.to_thread(self._ready_model_with_hash, digest)
        if existing is not None:
            return _to_api(existing), False
        display_name = _display_name(display_name, source.name)
        if action == "move" and await asyncio.to_thread(_same_filesystem, source.path.parent, self.models_dir):
            incoming = _Incoming(source.path, source.name, digest, source.stat.st_size, unchanged_since=source.stat)
            try:
                new_model = _NewModel(display_name, summarize_metadata(source.header, source.name))
                record, created = await self._register([incoming], new_model)
                return _to_api(record), created
            except PermissionError as error:
                raise PathNotAllowedError(f"the service may not move {file_path}; use action copy") from error
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
                # Same device but another mount point (a bind mount): copy instead.
        incoming, header = await self._stage_copy(source.path, source.stat, digest, source.name)
        record, created = await self._register([incoming], _NewModel(display_name, summarize_metadata(header, source.name)))
        if created and action == "move":
            try:
                await asyncio.to_thread(_remove_files, [source.path])
            except OSError:
                logger.warning("imported %s but could not remove the source", source.path, exc_info=True)
        return _to_api(record), created

    def _inspect_source(self, file_path: str, action: str) -> _Source:
        if "\x00" in file_path or not os.path.isabs(file_path):
            raise PathNotAllowedError(
                "file_path must be an absolute path on the server, such as /home/me/models/model.gguf",
                {"file_path": file_path},
            )
        if ".." in Path(file_path).parts:
            raise PathNotAllowedError("file_path must not contain '..'; give the plain absolute path", {"file_path": file_path})
        real = os.path.realpath(file_path)
        allowed = [os.path.realpath(folder) for folder in self.settings.import_allowed_dirs]
        if not any(_is_within(real, folder) for folder in allowed):
            raise PathNotAllowedError(
                f"{file_path} is outside the folders imports may read from; put the file in one of them "
                "or add its folder to IMPORT_ALLOWED_DIRS",
                {"file_path": file_path, "allowed_dirs": allowed},
            )
        try:
            info = os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            raise SourceFileNotFoundError(f"there is no file at {file_path}", {"file_path": file_path}) from None
        except PermissionError:
            raise PathNotAllowedError(f"the service may not read {file_path}", {"file_path": file_path}) from None
        if not stat.S_ISREG(info.st_mode):
            raise InvalidFileError(f"{file_path} is not a regular file", {"file_path": file_path})
        name = _safe_name(Path(file_path).name)
        if action == "move":
            if os.path.islink(file_path):
                raise InvalidFileError(
                    f"{file_path} is a symbolic link; move the file it points to, or use action copy",
                    {"file_path": file_path},
                )
            if not os.access(os.path.dirname(real), os.W_OK):
                raise PathNotAllowedError(f"the service may not remove files from the folder of {file_path}; use action copy")
        try:
            header = read_gguf_header(real)
        except PermissionError:
            raise PathNotAllowedError(f"the service may not read {file_path}", {"file_path": file_path}) from None
        return _Source(Path(real), name, info, header)

    def _ready_model_with_hash(self, sha256: str) -> ModelRecord | None:
        record = self.catalogue.find_model_by_hash(sha256)
        return record if record is not None and record.state == "ready" else None

    def _require_free_space(self, needed: int) -> None:
        free = shutil.disk_usage(self.models_dir).free
        if free < needed + FREE_SPACE_MARGIN_BYTES:
            raise InsufficientStorageError(
                f"not enough free disk in {self.models_dir}: {needed} bytes needed plus a margin of "
                f"{FREE_SPACE_MARGIN_BYTES}, {free} free; delete models or run POST /local/storage/cleanup",
                {"needed_bytes": needed, "free_bytes": free},
            )

    async def _new_staging(self) -> _StagingFile:
        return await asyncio.to_thread(_StagingFile, self.models_dir, self._staging)

    async def _discard(self, staging: _StagingFile | None) -> None:
        if staging is not None:
            await _in_thread_to_completion(staging.discard)

    async def _stage_copy(
        self, source: Path, expected: os.stat_result, sha256: str, name: str
    ) -> tuple[_Incoming, GGUFHeader]:
        """Copy `source` into a staging file, checking its bytes hash to `sha256`; returns it with its header."""
        await asyncio.to_thread(self._require_free_space, expected.st_size)
        staging = await self._new_staging()
        try:
            await asyncio.to_thread(staging.copy_from, source, expected)
            if await asyncio.to_thread(staging.finish) != sha256:
                raise _changed_error(name)
            header = await asyncio.to_thread(read_gguf_header, staging.path)  # of the very bytes we keep
        except BaseException:
            await self._discard(staging)
            raise
        return _Incoming(staging.path, name, sha256, staging.size_bytes, staging=staging), header

    # ------------------------------------------------------------ upload

    async def stage_upload(
        self, chunks: AsyncIterator[bytes], filename: str, *, expected_size: int | None = None
    ) -> StagedUpload:
        """Write `chunks` to a staging file in MODELS_DIR while hashing them, then check its GGUF header.

        The staging file is removed when anything fails, including `chunks` raising (a cut-off upload).
        Pass the result to `register_upload`. Raises `InvalidFileError` (a name not ending `.gguf`, not
        GGUF) and `InsufficientStorageError` (`expected_size` over the free space, or the disk filled up).
        """
        name = _safe_name(filename)
        await asyncio.to_thread(self._require_free_space, expected_size or 0)
        staging = await self._new_staging()
        try:
            batch: list[bytes] = []
            batched = 0
            async for chunk in chunks:
                batch.append(chunk)
                batched += len(chunk)
                if batched >= CHUNK_SIZE:
                    await asyncio.to_thread(staging.write, batch)
                    batch, batched = [], 0
            await asyncio.to_thread(staging.write, batch)
            digest = await asyncio.to_thread(staging.finish)
            header = await asyncio.to_thread(read_gguf_header, staging.path)
        except BaseException:
            await self._discard(staging)
            raise
        incoming = _Incoming(staging.path, name, digest, staging.size_bytes, staging=staging)
        return StagedUpload(incoming, summarize_metadata(header, name))

    async def register_upload(self, staged: StagedUpload, display_name: str | None = None) -> tuple[LocalModel, bool]:
        """Add a staged upload to the library: `(model, True)`, or `(existing model, False)` for known bytes.

        The staging file is used up either way. `display_name` is trimmed to 200 characters.
        """
        try:
            new_model = _NewModel(_display_name(display_name, staged.incoming.name), staged.metadata)
            record, created = await self._register([staged.incoming], new_model)
        except BaseException:
            await self._discard(staged.incoming.staging)
            raise
        return _to_api(record), created

    async def import_upload(
        self, chunks: AsyncIterator[bytes], filename: str, display_name: str | None = None
    ) -> tuple[LocalModel, bool]:
        """`stage_upload` then `register_upload`, for a caller that knows the display name up front."""
        staged = await self.stage_upload(chunks, filename)
        return await self.register_upload(staged, display_name)

    # ------------------------------------------------------------ downloads

    async def adopt_download(
        self,
        parts: list[Path],
        final_names: list[str],
        part_sha256: list[str],
        *,
        repo_id: str,
        display_name: str | None = None,
    ) -> LocalModel:
        """Move verified downloaded files into MODELS_DIR and register them as one model.

        `parts` are complete files (their hashes `part_sha256` already checked), in order; `final_names`
        their base names in the library (made unique on collision, split parts keeping a common stem).
        A split model's `file_path` is its first part and `metadata["parts"]` lists every part.
        When a model with the first part's hash is already there it is returned and the parts deleted.
        Across filesystems the parts are copied (hash checked again) and deleted once the model is ready.
        Raises `InvalidFileError` (including `GGUFFormatError`) for a bad name or header, or hash mismatch;
        `InsufficientStorageError`; `ValueError` when the three lists differ in length.
        """
        if not parts or not len(parts) == len(final_names) == len(part_sha256):
            raise ValueError("parts, final_names and part_sha256 must be non-empty lists of the same length")
        parts = [Path(part) for part in parts]
        names = [_safe_name(name) for name in final_names]
        stats, headers = await asyncio.to_thread(self._inspect_parts, parts)
        existing = await asyncio.to_thread(self._ready_model_with_hash, part_sha256[0])
        if existing is not None:
            await asyncio.to_thread(_remove_files, parts)
            return _to_api(existing)
        new_model = _NewModel(
            _display_name(display_name, names[0]), summarize_metadata(headers[0], names[0]), repo_id, is_downloaded=True
        )
        if await asyncio.to_thread(_same_filesystem, parts[0].parent, self.models_dir):
            await asyncio.to_thread(_fsync_files, parts)  # their bytes must be durable before their name is
            items = [
                _Incoming(part, name, digest, info.st_size, unchanged_since=info)
                for part, name, digest, info in zip(parts, names, part_sha256, stats)
            ]
            try:
                record, created = await self._register(items, new_model)
                if not created:
                    await asyncio.to_thread(_remove_files, parts)
                return _to_api(record)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
        await asyncio.to_thread(self._require_free_space, sum(info.st_size for info in stats))
        items = []
        try:
            for part, name, digest, info in zip(parts, names, part_sha256, stats):
                items.append((await self._stage_copy(part, info, digest, name))[0])
        except BaseException:
            for item in items:
                await self._discard(item.staging)
            raise
        record, _created = await self._register(items, new_model)
        await asyncio.to_thread(_remove_files, parts)
        return _to_api(record)

    @staticmethod
    def _inspect_parts(parts: list[Path]) -> tuple[list[os.stat_result], list[GGUFHeader]]:
        stats = []
        for part in parts:
            info = os.stat(part)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidFileError(f"{part} is not a regular file", {"file_path": str(part)})
            stats.append(info)
        return stats, [read_gguf_header(part, read_tensor_info=index == 0) for index, part in enumerate(parts)]

    # ------------------------------------------------------------ the commit step

    async def _register(self, items: list[_Incoming], new_model: _NewModel) -> tuple[ModelRecord, bool]:
        async with self._lock:
            return await _in_thread_to_completion(self._commit, items, new_model)

    def _commit(self, items: list[_Incoming], new_model: _NewModel) -> tuple[ModelRecord, bool]:
        """Steps 2 to 4 of the module docstring, with the dedupe check; runs under the lock, in a thread.

        Returns `(record, created)`. On a duplicate the staged files are removed, a client's file is left.
        On failure every file renamed so far goes back where it came from and the row is deleted.
        """
        existing = self.catalogue.find_model_by_hash(items[0].sha256)
        if existing is not None and existing.state == "ready":
            self._discard_staged(items)
            return existing, False
        if existing is not None:  # pending rows exist only inside this step, so this one is a crash's leftover
            self.catalogue.delete_model(existing.model_id)
        finals = [self.models_dir / name for name in self._free_names([item.name for item in items])]
        metadata = new_model.metadata
        if len(items) > 1:
            metadata = {
                **metadata,
                "parts": [
                    {"filename": final.name, "sha256": item.sha256, "size_bytes": item.size_bytes}
                    for item, final in zip(items, finals)
                ],
            }
        record = ModelRecord(
            model_id=str(uuid4()),
            state="pending",
            display_name=new_model.display_name,
            file_path=str(finals[0]),
            part_paths=[str(final) for final in finals] if len(finals) > 1 else [],
            file_size_bytes=sum(item.size_bytes for item in items),
            file_hash=items[0].sha256,
            imported_at=utc_now(),
            original_repo_id=new_model.original_repo_id,
            metadata=metadata,
            is_downloaded=new_model.is_downloaded,
        )
        try:
            self.catalogue.insert_model(record)
        except sqlite3.IntegrityError:
            existing = self._ready_model_with_hash(items[0].sha256)
            if existing is None:
                raise
            self._discard_staged(items)
            return existing, False
        moved: list[tuple[_Incoming, Path]] = []
        try:
            for item, final in zip(items, finals):
                os.replace(item.source, final)
                moved.append((item, final))
                if item.unchanged_since is not None and not _same_file(os.stat(final), item.unchanged_since):
                    raise _changed_error(item.name)
            for folder in {self.models_dir} | {item.source.parent for item in items}:
                _fsync_dir(folder)
            self.catalogue.mark_model_ready(record.model_id)
        except BaseException:
            for item, final in reversed(moved):
                try:
                    os.replace(final, item.source)
                except OSError:
                    logger.exception("could not move %s back to %s", final, item.source)
            with contextlib.suppress(Exception):
                self.catalogue.delete_model(record.model_id)
            self._discard_staged(items)
            raise
        for item in items:
            if item.staging is not None:
                item.staging.placed()
        record.state = "ready"
        return record, True

    @staticmethod
    def _discard_staged(items: list[_Incoming]) -> None:
        for item in items:
            if item.staging is not None:
                item.staging.discard()

    def _free_names(self, wanted: list[str]) -> list[str]:
        """`wanted`, or the first numbered variant of all of them that neither a file nor a row uses."""
        taken = {name.casefold() for name in os.listdir(self.models_dir)}
        for record in self.catalogue.list_models(include_pending=True):
            taken.update(Path(path).name.casefold() for path in record.all_paths)
        for number in itertools.count(1):
            names = [_numbered(name, number) for name in wanted]
            if not any(name.casefold() in taken for name in names):
                return names
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ reading and deleting

    async def list_models(self, q: str | None = None, sort: LocalModelSort = LocalModelSort.imported) -> list[LocalModel]:
        """Ready models; `q` keeps those whose name, repo, file name or GGUF name contains it (any case).

        `sort`: imported (oldest first), name, size (largest first), last_accessed (most recent first).
        """
        records = await asyncio.to_thread(self.catalogue.list_models)
        models = [_to_api(record) for record in records]
        if q:
            models = [model for model in models if _matches(model, q.casefold())]
        return _sorted(models, sort)

    async def get_model(self, model_id: str) -> LocalModel:
        """The model, with `last_accessed` set to now. Raises `ModelNotFoundError`."""
        record = await asyncio.to_thread(self.catalogue.get_model, model_id)
        if record is None:
            raise ModelNotFoundError(f"no model with id {model_id} in the library", {"model_id": model_id})
        record.last_accessed = utc_now()
        await asyncio.to_thread(self.catalogue.touch_model, model_id, record.last_accessed)
        return _to_api(record)

    async def delete_model(self, model_id: str, force: bool = False) -> None:
        """Remove the model's row, then its files. Raises `ModelNotFoundError`, and `FileInUseError`
        while one of its files is marked in use, unless `force`."""
        async with self._lock:
            record = await asyncio.to_thread(self.catalogue.get_model, model_id)
            if record is None:
                raise ModelNotFoundError(f"no model with id {model_id} in the library", {"model_id": model_id})
            busy = [path for path in record.all_paths if self.is_in_use(path)]
            if busy and not force:
                raise FileInUseError(
                    f"{Path(busy[0]).name} is still being written; try again when that is done, or pass force=true",
                    {"model_id": model_id, "files": busy},
                )
            await _in_thread_to_completion(self._remove_model, record)

    def _remove_model(self, record: ModelRecord) -> None:
        self.catalogue.delete_model(record.model_id)
        _remove_files(record.all_paths)

    def mark_in_use(self, path: str | os.PathLike[str]) -> None:
        """Mark a file as being written (or read) by someone, so deleting its model answers FILE_IN_USE."""
        self._in_use[os.path.abspath(path)] += 1

    def release(self, path: str | os.PathLike[str]) -> None:
        key = os.path.abspath(path)
        self._in_use[key] -= 1
        if self._in_use[key] <= 0:
            del self._in_use[key]

    @contextlib.contextmanager
    def in_use(self, path: str | os.PathLike[str]) -> Iterator[None]:
        self.mark_in_use(path)
        try:
            yield
        finally:
            self.release(path)

    def is_in_use(self, path: str | os.PathLike[str]) -> bool:
        return self._in_use.get(os.path.abspath(path), 0) > 0

    # ------------------------------------------------------------ stats and cleanup

    async def storage_stats(self) -> StorageStats:
        """Sizes measured on disk, the disk holding MODELS_DIR, partial downloads, and unowned files."""
        async with self._lock:
            return await asyncio.to_thread(self._stats)

    def _stats(self) -> StorageStats:
        records = self.catalogue.list_models(include_pending=True)
        ready = [record for record in records if record.state == "ready"]
        total = sum(_regular_size(path) or 0 for record in ready for path in record.all_paths)
        folder = self.models_dir
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        disk = shutil.disk_usage(folder)
        return StorageStats(
            total_models=len(ready),
            total_count=len(ready),
            total_size_bytes=total,
            total_size_gb=round(total / _GIB, 3),
            disk_free_bytes=disk.free,
            available_bytes=disk.free,
            disk_free_gb=round(disk.free / _GIB, 3),
            disk_total_gb=round(disk.total / _GIB, 3),
            usage_percent=round((disk.total - disk.free) / disk.total * 100, 2) if disk.total else 0.0,
            storage_directory=str(self.models_dir),
            partial_downloads_bytes=_tree_size(self.downloads_dir),
            orphaned_files=len(self._orphans(self._owned_paths(records))),
        )

    @staticmethod
    def _owned_paths(records: Iterable[ModelRecord]) -> set[str]:
        return {os.path.abspath(path) for record in records for path in record.all_paths}

    def _orphans(self, owned: set[str]) -> list[tuple[str, int]]:
        """Files (and links) directly in MODELS_DIR that no row owns, with their sizes; live staging files excluded."""
        if not self.models_dir.is_dir():
            return []
        found = []
        with os.scandir(self.models_dir) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) or entry.path in owned or entry.path in self._protected:
                    continue
                if entry.path in self._staging:  # an import in progress writes it
                    continue
                info = entry.stat(follow_symlinks=False)
                found.append((entry.path, info.st_size if stat.S_ISREG(info.st_mode) else 0))
        return found

    def _unowned_partials(self, kept_ids: set[str]) -> list[tuple[str, int]]:
        """Entries of DOWNLOADS_DIR whose name starts with no kept download id, with their sizes."""
        if not self.downloads_dir.is_dir() or self.downloads_dir == self.models_dir:
            return []
        guarded = [self._data_dir, str(self.models_dir)]
        found = []
        with os.scandir(self.downloads_dir) as entries:
            for entry in entries:
                if any(entry.name.startswith(download_id) for download_id in kept_ids):
                    continue
                if entry.path in self._protected or any(_is_within(folder, entry.path) for folder in guarded):
                    continue
                found.append((entry.path, _tree_size(entry.path)))
        return found

    async def cleanup(self, dry_run: bool = False, active_download_ids: Iterable[str] = frozenset()) -> CleanupResult:
        """Remove files in MODELS_DIR no row owns, partial downloads no active or resumable download owns,
        and rows whose files are gone (not when their folder is missing or empty: an unmounted drive).

        Never a registered model's file, never a live staging file, never through a link. `dry_run`
        lists the same and removes nothing.
        """
        async with self._lock:
            return await _in_thread_to_completion(self._cleanup, dry_run, set(active_download_ids))

    def _cleanup(self, dry_run: bool, active_download_ids: set[str]) -> CleanupResult:
        records = self.catalogue.list_models(include_pending=True)
        unavailable = self._unavailable_folders(records)
        broken = [r for r in records if r.state == "ready" and not self._files_present(r)]
        gone = [r for r in broken if not {Path(p).parent.as_posix() for p in r.all_paths} & unavailable]
        gone_ids = {record.model_id for record in gone}
        # The remaining parts of a split model whose other parts are gone become orphans with it.
        orphans = self._orphans(self._owned_paths(r for r in records if r.model_id not in gone_ids))
        resumable = self.catalogue.list_downloads(RESUMABLE_DOWNLOAD_STATES)
        partials = self._unowned_partials({job.download_id for job in resumable} | active_download_ids)

        removed: list[str] = [Path(record.file_path).name for record in gone]
        freed = 0
        if not dry_run:
            for record in gone:
                self.catalogue.delete_model(record.model_id)
        for path, size in orphans + partials:
            if not dry_run:
                try:
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
                except OSError:
                    logger.warning("cleanup could not remove %s", path, exc_info=True)
                    continue
            removed.append(os.path.basename(path))
            freed += size

        verb = "Would remove" if dry_run else "Removed"
        message = (
            f"{verb} {len(orphans)} orphaned file(s), {len(partials)} partial download(s) and "
            f"{len(gone)} catalogue entr{'y' if len(gone) == 1 else 'ies'} whose files are gone "
            f"({freed} bytes)."
        )
        if len(broken) > len(gone):
            message += (
                f" Kept {len(broken) - len(gone)} entr(ies) whose folder is missing or empty "
                f"({', '.join(sorted(unavailable))}): mount the drive, or delete them one by one."
            )
        if not dry_run and removed:
            logger.info("cleanup: %s", message)
        return CleanupResult(
            message=message, removed_files=removed, removed_count=len(removed), freed_bytes=freed, dry_run=dry_run
        )
