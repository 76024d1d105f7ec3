"""The one-pass import copy (`library/fast_copy.py` through `StagingFile.copy_from`): bytes, hash, failures."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from model_manager.core.errors import InsufficientStorageError, InvalidFileError
from model_manager.core.services.library import fast_copy
from model_manager.core.services.library.staging import StagingFile


def _source(folder: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = folder / "source.gguf"
    path.write_bytes(data)
    return path, data


def _copy(tmp_path: Path, source: Path) -> tuple[StagingFile, str, set[str]]:
    registry: set[str] = set()
    staging = StagingFile(tmp_path, registry)
    staging.copy_from(source, os.stat(source))
    return staging, staging.finish(), registry


@pytest.mark.parametrize("size", [0, 1, fast_copy.HASH_BLOCK + 17, fast_copy.COPY_CHUNK + fast_copy.HASH_BLOCK // 3])
def test_the_copy_holds_the_same_bytes_and_hash(tmp_path, monkeypatch, size):
    monkeypatch.setattr(fast_copy, "COPY_CHUNK", 4 * 1024 * 1024)  # several chunks without a huge file
    source, data = _source(tmp_path, size)
    staging, digest, registry = _copy(tmp_path, source)
    assert digest == hashlib.sha256(data).hexdigest()
    assert staging.path.read_bytes() == data and staging.size_bytes == size
    assert str(staging.path) in registry and source.read_bytes() == data


def test_without_kernel_copy_it_reads_hashes_and_writes(tmp_path, monkeypatch):
    calls = []

    def no_copy_file_range(*args):
        calls.append(args)
        raise OSError(errno.ENOSYS, "not implemented")

    monkeypatch.setattr(os, "copy_file_range", no_copy_file_range)
    monkeypatch.setattr(fast_copy, "_reflink", lambda *args: False)
    source, data = _source(tmp_path, 3 * fast_copy.HASH_BLOCK + 5)
    staging, digest, _ = _copy(tmp_path, source)
    assert calls, "the kernel copy was tried first"
    assert digest == hashlib.sha256(data).hexdigest() and staging.path.read_bytes() == data


def test_a_full_disk_is_insufficient_storage_and_the_staging_file_can_go(tmp_path, monkeypatch):
    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "copy_file_range", disk_full)
    monkeypatch.setattr(fast_copy, "_reflink", lambda *args: False)
    source, data = _source(tmp_path, 1000)
    staging = StagingFile(tmp_path, set())
    with pytest.raises(InsufficientStorageError):
        staging.copy_from(source, os.stat(source))
    staging.discard()
    assert not staging.path.exists() and source.read_bytes() == data


def test_a_source_that_shrinks_or_changes_is_refused(tmp_path):
    source, data = _source(tmp_path, 100_000)
    expected = os.stat(source)
    source.write_bytes(data[:50_000])  # same inode, shorter: the copy runs out of bytes
    staging = StagingFile(tmp_path, set())
    with pytest.raises(InvalidFileError, match="changed while"):
        staging.copy_from(source, expected)
    staging.discard()
    assert not staging.path.exists()


def test_a_discarded_staging_file_stops_the_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(fast_copy, "COPY_CHUNK", 64 * 1024)
    monkeypatch.setattr(fast_copy, "_reflink", lambda *args: False)
    source, _ = _source(tmp_path, 1_000_000)
    staging = StagingFile(tmp_path, set())
    real = os.copy_file_range
    copied = []

    def copy_then_discard(*args):
        copied.append(args)
        count = real(*args)
        if len(copied) == 2:
            staging._lock.release()  # discard() waits for the chunk in flight: let it run in between
            try:
                staging.discard()
            finally:
                staging._lock.acquire()
        return count

    monkeypatch.setattr(os, "copy_file_range", copy_then_discard)
    with pytest.raises(InvalidFileError, match="stopped"):
        staging.copy_from(source, os.stat(source))
    assert len(copied) == 2 and not staging.path.exists()
