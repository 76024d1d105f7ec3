"""Staging files: hidden files in MODELS_DIR that receive a model's bytes, hashed as they are written."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

from model_manager.core.errors import InvalidFileError
from model_manager.core.services.library import files

STAGING_PREFIX = ".importing-"
STAGING_SUFFIX = ".part"


class StagingFile:
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
            self._file = open(self.path, "x+b")  # readable: the hash maps the copied pages
        except BaseException:
            registry.discard(str(self.path))
            raise

    def write(self, chunks: Iterable[bytes | memoryview]) -> None:
        with self._lock, files.disk_full_is_insufficient_storage(self.path.parent):
            if self._file.closed:
                raise InvalidFileError("the import was stopped before the file was complete")
            for chunk in chunks:
                self._file.write(chunk)
                self._hash.update(chunk)
                self.size_bytes += len(chunk)

    def copy_from(self, source: Path, expected: os.stat_result) -> None:
        """Append the bytes of `source`, which must still be the file `expected` describes.

        One pass (`fast_copy.py`): the kernel copies (a reflink, or copy_file_range) while a second
        thread hashes what is copied; memory stays at one buffer. Raises `InvalidFileError` when the
        source changed or the import was stopped, `InsufficientStorageError` on a full disk.
        """
        from model_manager.core.services.library import fast_copy  # here: the rest of this module is not ours

        @contextlib.contextmanager
        def writing():
            with self._lock:  # `discard` waits for the chunk in flight, and the file stays open during it
                if self._file.closed:
                    raise InvalidFileError("the import was stopped before the file was complete")
                yield

        with open(source, "rb", buffering=0) as src, files.disk_full_is_insufficient_storage(self.path.parent):
            if not files.same_file(os.fstat(src.fileno()), expected):
                raise files.changed_error(source.name)
            with writing():
                self._file.flush()  # the copy writes through the file descriptor, after what is buffered
            try:
                fast_copy.copy_hashing(
                    src.fileno(), self._file.fileno(), self.size_bytes, expected.st_size, self._hash, writing
                )
            except fast_copy.SourceShrank:
                raise files.changed_error(source.name) from None
            with writing():
                self._file.seek(0, os.SEEK_END)
                self.size_bytes += expected.st_size
            if not files.same_file(os.fstat(src.fileno()), expected):  # written to while we copied
                raise files.changed_error(source.name)

    def finish(self) -> str:
        """Flush and fsync the file, close it, and return the SHA-256 of everything written."""
        with self._lock, files.disk_full_is_insufficient_storage(self.path.parent):
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
class Incoming:
    """One file to rename into MODELS_DIR under (a free variant of) `name`."""

    source: Path
    name: str
    sha256: str
    size_bytes: int
    staging: StagingFile | None = None  # set when `source` is our own staged copy
    unchanged_since: os.stat_result | None = None  # a client's file renamed in place must still be this one
    in_place: bool = False  # registered where it is (a file found in MODELS_DIR, or registered outside it)
    link: bool = False  # enters MODELS_DIR as a hard link to `source`, which stays where it is
