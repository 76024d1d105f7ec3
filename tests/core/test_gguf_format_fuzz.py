"""Hostile bytes never escape the GGUF reader as anything but GGUFFormatError, nor cost time or memory."""

from __future__ import annotations

import functools
import struct
import tempfile
import time
import tracemalloc
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from model_manager.core.gguf_format import GGUFFormatError, GGUFHeader, read_gguf_header
from tests.gguf_factory import write_gguf

MAX_SECONDS = 1.0
MAX_PEAK_BYTES = 64 * 1024 * 1024
FUZZ = settings(max_examples=250, deadline=None)  # time is asserted per example, under tracemalloc


@functools.cache
def _real_file_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as directory:
        path = write_gguf(Path(directory) / "model.gguf", vocab_size=80, extra_kv={"test.nested": [[1, 2], [3]]})
        return path.read_bytes()


def _read_within_bounds(data: bytes) -> None:
    """Reads `data` as a file and checks the outcome: a header or GGUFFormatError, quickly and in bounded memory."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.gguf"
        path.write_bytes(data)
        tracemalloc.start()
        started = time.perf_counter()
        try:
            assert isinstance(read_gguf_header(path), GGUFHeader)
        except GGUFFormatError:
            pass
        finally:
            elapsed = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    assert elapsed < MAX_SECONDS
    assert peak < MAX_PEAK_BYTES


_counts = st.one_of(st.integers(0, 8), st.integers(0, 2**64 - 1))


@FUZZ
@given(tensor_count=_counts, kv_count=_counts, body=st.binary(max_size=2048))
def test_random_bytes_after_a_valid_start(tensor_count: int, kv_count: int, body: bytes) -> None:
    _read_within_bounds(b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count) + body)


_mutation = st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 2**32), st.integers(0, 255))


@FUZZ
@given(mutations=st.lists(_mutation, min_size=1, max_size=8))
def test_mutated_real_header(mutations: list[tuple[str, int, int]]) -> None:
    data = bytearray(_real_file_bytes())
    for operation, position, value in mutations:
        index = position % (len(data) + 1)
        if operation == "insert":
            data.insert(index, value)
        elif index < len(data):
            if operation == "flip":
                data[index] ^= value or 1
            else:
                del data[index]
    _read_within_bounds(bytes(data))
