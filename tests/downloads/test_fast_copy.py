"""The one-pass import copy (`library/fast_copy.py` through `StagingFile.copy_from`): bytes, hash, failures."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import threading
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


def _no_reflink(monkeypatch, chunk: int = 64 * 1024) -> None:
    monkeypatch.setattr(fast_copy, "COPY_CHUNK", chunk)
    monkeypatch.setattr(fast_copy, "HASH_BLOCK", chunk)
    monkeypatch.setattr(fast_copy, "_reflink", lambda *args: False)


def test_the_hash_is_of_the_bytes_kept_not_of_the_source(tmp_path, monkeypatch):
    """The hash reads the target's pages: a chunk that reached the target wrong gets a hash that says so."""
    _no_reflink(monkeypatch)
    source, data = _source(tmp_path, 1_000_000)
    real = os.copy_file_range

    def copy_then_flip_a_byte(source_fd, target_fd, count, offset_src, offset_dst):
        copied = real(source_fd, target_fd, count, offset_src, offset_dst)
        if offset_src == 3 * 64 * 1024:
            os.pwrite(target_fd, bytes([data[offset_src] ^ 0xFF]), offset_dst)
        return copied

    monkeypatch.setattr(os, "copy_file_range", copy_then_flip_a_byte)
    staging, digest, _ = _copy(tmp_path, source)
    kept = staging.path.read_bytes()
    assert kept != data and digest == hashlib.sha256(kept).hexdigest()


def test_a_copy_after_bytes_already_written_hashes_them_all(tmp_path, monkeypatch):
    """The target offset is not page-aligned: the mapped windows must start at the right byte."""
    _no_reflink(monkeypatch)
    source, data = _source(tmp_path, 300_001)
    staging = StagingFile(tmp_path, set())
    staging.write([b"x" * 4097])
    staging.copy_from(source, os.stat(source))
    digest = staging.finish()
    assert staging.path.read_bytes() == b"x" * 4097 + data
    assert digest == hashlib.sha256(b"x" * 4097 + data).hexdigest() and staging.size_bytes == 4097 + len(data)


def test_a_target_that_cannot_be_mapped_is_hashed_from_the_source(tmp_path, monkeypatch):
    _no_reflink(monkeypatch)
    source, data = _source(tmp_path, 500_000)

    def no_mmap(*args, **kwargs):
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(mmap, "mmap", no_mmap)
    staging, digest, _ = _copy(tmp_path, source)
    assert digest == hashlib.sha256(data).hexdigest() and staging.path.read_bytes() == data
    # A write-only target is never mapped either.
    monkeypatch.undo()
    _no_reflink(monkeypatch)
    target = tmp_path / "write-only.bin"
    source_fd, target_fd = os.open(source, os.O_RDONLY), os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        digest_of_copy = hashlib.sha256()
        fast_copy.copy_hashing(source_fd, target_fd, 0, len(data), digest_of_copy)
    finally:
        os.close(source_fd)
        os.close(target_fd)
    assert digest_of_copy.hexdigest() == hashlib.sha256(data).hexdigest() and target.read_bytes() == data


def test_a_copy_failing_midway_stops_the_hasher(tmp_path, monkeypatch):
    _no_reflink(monkeypatch)
    source, data = _source(tmp_path, 1_000_000)
    real = os.copy_file_range
    calls = []

    def full_on_the_third_chunk(*args):
        calls.append(args)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", full_on_the_third_chunk)
    staging = StagingFile(tmp_path, set())
    with pytest.raises(InsufficientStorageError):
        staging.copy_from(source, os.stat(source))
    staging.discard()
    assert len(calls) == 3 and not staging.path.exists() and source.read_bytes() == data
    assert not [thread for thread in threading.enumerate() if thread.name == "import-sha256"]
