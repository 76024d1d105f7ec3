"""Real GGUF files for tests, written with the `gguf` package's own `GGUFWriter`.

Every file is valid for `gguf.GGUFReader` and llama.cpp's loader: real key/values, a small vocabulary
and float32 tensors with their data. Broken files are written by hand in the tests that need them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFValueType, GGUFWriter

from model_manager.core.gguf_format import split_part_names


def write_gguf(
    path: str | os.PathLike[str],
    *,
    architecture: str = "llama",
    name: str = "Test Model",
    file_type: int | None = 15,  # Q4_K_M
    context_length: int = 4096,
    block_count: int = 2,
    chat_template: str | None = "{{ messages }}",
    size_label: str | None = "1B",
    split: tuple[int, int] | None = None,
    extra_kv: dict[str, Any] | None = None,
    tensors: int = 2,
    tensor_elements: int = 64,
    vocab_size: int = 32,
) -> Path:
    """Write a GGUF file and return its path.

    `split` is (index from 1, count) and writes the `split.*` keys as gguf-split does. `extra_kv` maps
    keys to plain values (str, bool, int as UINT32, float as FLOAT32, list as an array) or to
    `(value, GGUFValueType)` for another type. The tensors are `tensors` float32 matrices of shape
    (1, tensor_elements), so the file holds `tensors * tensor_elements` parameters.
    """
    path = Path(path)
    writer = GGUFWriter(path, architecture)
    writer.add_name(name)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_context_length(context_length)
    writer.add_block_count(block_count)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if size_label is not None:
        writer.add_size_label(size_label)
    if split is not None:
        index, count = split
        writer.add_uint16("split.no", index - 1)
        writer.add_uint16("split.count", count)
        writer.add_int32("split.tensors.count", tensors * count)
    if vocab_size:
        writer.add_token_list([f"tok{i}" for i in range(vocab_size)])
    for key, value in (extra_kv or {}).items():
        _add_value(writer, key, value)
    for index in range(tensors):
        data = np.arange(tensor_elements, dtype=np.float32).reshape(1, tensor_elements)
        writer.add_tensor(f"blk.{index}.weight", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_value(writer: GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, tuple):
        value, value_type = value
        writer.add_key_value(key, value, value_type)
    elif isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_key_value(key, value, GGUFValueType.STRING)  # add_string would drop an empty string
    else:
        writer.add_array(key, list(value))


def write_mmproj(path: str | os.PathLike[str], **kw: Any) -> Path:
    """Write a multimodal projector file: architecture "clip", `general.type` "mmproj", F16, no vocabulary."""
    kw.setdefault("architecture", "clip")
    kw.setdefault("file_type", 1)
    kw.setdefault("chat_template", None)
    kw.setdefault("vocab_size", 0)
    kw["extra_kv"] = {"general.type": "mmproj", **(kw.get("extra_kv") or {})}
    return write_gguf(path, **kw)


def write_split_model(directory: str | os.PathLike[str], stem: str, count: int, **kw: Any) -> list[Path]:
    """Write all `count` parts of a split model into `directory`, named as llama.cpp's gguf-split names them."""
    return [
        write_gguf(Path(directory) / name, split=(index, count), **kw)
        for index, name in enumerate(split_part_names(stem, count), start=1)
    ]


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of the file at `path`."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def sha256_of_bytes(data: bytes) -> str:
    """The hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()
