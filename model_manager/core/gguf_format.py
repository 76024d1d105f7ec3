"""The GGUF file format: header reading, quantization labels and split-file names.

Everything in the project that needs to know how a GGUF file is laid out or named asks this module.
The reader parses only the header (magic, version, key/values, tensor infos) and checks every count
and length against the bytes left in the file before it reads or allocates anything, so a hostile
header costs no more than its own size and a 100 GB model costs no more than its header.
"""

from __future__ import annotations

import io
import os
import re
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType, LlamaFileType

from model_manager.core.errors import InvalidFileError

MAX_TENSOR_COUNT = 1 << 20  # the largest MoE checkpoints hold a few thousand tensors per file
MAX_KV_COUNT = 1 << 16  # real files carry 20 to 60 keys
MAX_STRING_LENGTH = 1 << 24  # 16 MiB; chat templates, the longest real strings, are tens of KiB
MAX_ARRAY_LENGTH = 1 << 24  # vocabularies and merge lists reach a few hundred thousand entries
MAX_TENSOR_DIMS = 8
MAX_ARRAY_DEPTH = 2  # an array of arrays, as in tokenizer merges of some models, and no deeper
KEPT_ARRAY_LENGTH = 64  # longer arrays are summarised as {"type": "array", "length": n}

_MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)  # version 1 used 32-bit counts and lengths; nothing current writes it
_MIN_KV_BYTES = 13  # empty key (8-byte length) + 4-byte value type + 1-byte value
_MIN_TENSOR_INFO_BYTES = 24  # empty name + n_dims + type + offset, with no dimensions
_MAX_ELEMENTS = (1 << 63) - 1  # ggml counts elements in int64
_CHUNK = 256 * 1024

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SCALARS: dict[int, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: _U32,
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<?"),
    GGUFValueType.UINT64: _U64,
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}


class GGUFFormatError(InvalidFileError):
    """Not a GGUF file this project can read: wrong magic, unsupported version, truncated or corrupt header."""


class GGUFTruncatedError(GGUFFormatError):
    """The header runs past the bytes available. For the first bytes of a remote file: fetch more and retry."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file as its header describes it: name, shape (ggml order), type and data size."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    n_bytes: int


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file says about itself before its tensor data starts."""

    version: int
    tensor_count: int
    kv_count: int
    metadata: dict[str, Any]
    parameter_count: int | None  # None when the tensor infos were not read
    header_size: int  # bytes up to the end of the tensor infos (of the key/values when those were not read)
    data_end: int | None = None  # where the last tensor's data ends; None when the tensor infos were not read
    tensors: tuple[TensorInfo, ...] | None = None  # only when asked for (keep_tensors=True)


class _Cursor:
    """Reads little-endian fields through its own buffer, knowing how many bytes the file has left.

    The file position always equals `_base + len(_buf)`; skips past the buffer seek instead of reading.
    """

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size
        self._buf = b""
        self._pos = 0  # index of the next unread byte in _buf
        self._base = 0  # file offset of _buf[0]

    @property
    def offset(self) -> int:
        return self._base + self._pos

    @property
    def remaining(self) -> int:
        return self._size - self.offset

    def _truncated(self, what: str, needed: int) -> GGUFFormatError:
        return GGUFTruncatedError(
            f"truncated file: {what} at offset {self.offset} needs {needed} bytes "
            f"but only {max(self.remaining, 0)} remain"
        )

    def _ensure(self, n: int, what: str) -> None:
        if len(self._buf) - self._pos >= n:
            return
        if n > self.remaining:
            raise self._truncated(what, n)
        tail = self._buf[self._pos :]
        self._base = self.offset
        self._buf = tail + self._file.read(max(n - len(tail), _CHUNK))
        self._pos = 0
        if len(self._buf) < n:  # the file shrank while we were reading it
            raise self._truncated(what, n)

    def take(self, n: int, what: str) -> bytes:
        self._ensure(n, what)
        start, self._pos = self._pos, self._pos + n
        return self._buf[start : self._pos]

    def unpack(self, field: struct.Struct, what: str) -> Any:
        self._ensure(field.size, what)
        (value,) = field.unpack_from(self._buf, self._pos)
        self._pos += field.size
        return value

    def skip(self, n: int, what: str) -> None:
        if n > self.remaining:
            raise self._truncated(what, n)
        if self._pos + n <= len(self._buf):
            self._pos += n
            return
        target = self.offset + n
        self._file.seek(target)
        self._buf, self._pos, self._base = b"", 0, target

    def string_length(self, what: str) -> int:
        length = self.unpack(_U64, f"length of {what}")
        if length > MAX_STRING_LENGTH:
            raise GGUFFormatError(
                f"{what} at offset {self.offset - 8} claims {length} bytes, over the limit of {MAX_STRING_LENGTH}"
            )
        if length > self.remaining:
            raise GGUFTruncatedError(
                f"truncated file: {what} of {length} bytes at offset {self.offset - 8} runs past the end "
                f"of the file ({self.remaining} bytes remain)"
            )
        return length

    def string(self, what: str) -> str:
        return self.take(self.string_length(what), what).decode("utf-8", errors="replace")

    def skip_strings(self, count: int, what: str) -> None:
        """Skips `count` consecutive strings; a tight loop over the buffer, since a vocabulary holds 150k of them."""
        unpack_from = _U64.unpack_from
        while count:
            buf, pos = self._buf, self._pos
            # Strings that end before `end` are shorter than the limit, so the loop needs no length check.
            end = min(len(buf), pos + MAX_STRING_LENGTH)
            last_length_at = end - 8
            for done in range(count):
                if pos > last_length_at:
                    break
                (length,) = unpack_from(buf, pos)
                following = pos + 8 + length
                if following > end:
                    break
                pos = following
            else:
                done = count
            self._pos = pos
            count -= done
            if count:  # the next string straddles the buffer's end (or is bad): take the checked path
                self.skip(self.string_length(what), what)
                count -= 1


def read_gguf_header(
    path: str | os.PathLike[str], *, read_tensor_info: bool = True, keep_tensors: bool = False
) -> GGUFHeader:
    """Read the header of the GGUF file at `path`, never its tensor data.

    Returns a `GGUFHeader` with every key/value (long arrays summarised) and, when `read_tensor_info`
    is true, the parameter count summed over the tensor infos (and, with `keep_tensors`, each `TensorInfo`).
    Raises `GGUFFormatError` (its details name the path) when the file is empty, truncated, not GGUF,
    big-endian, of an unsupported version, or has counts, lengths or types outside the format's bounds.
    An `OSError` from opening or reading the file passes through unchanged.
    """
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        try:
            return _read_header(_Cursor(file, size), size, read_tensor_info, keep_tensors)
        except GGUFFormatError as error:
            name = os.path.basename(os.fspath(path))
            message = f"{name} is not a readable GGUF file: {error.message}"
            raise type(error)(message, {"path": os.fspath(path)}) from None


def parse_gguf_header(data: bytes, file_size: int | None = None) -> GGUFHeader:
    """Parse a GGUF header, with its tensor infos kept, from the first bytes of a file (`data`).

    For reading a header over the network: `file_size` is the whole file's size when known (only
    used to check where the tensor data ends). Raises `GGUFTruncatedError` when `data` ends before the
    tensor infos do (fetch more bytes and call again), `GGUFFormatError` when the header is bad.
    """
    cursor = _Cursor(io.BytesIO(data), len(data))
    return _read_header(cursor, file_size if file_size is not None else None, True, True)


def _read_header(cursor: _Cursor, size: int | None, read_tensor_info: bool, keep_tensors: bool = False) -> GGUFHeader:
    # `size` None: only the first bytes of the file are at hand, its full size is unknown.
    if size == 0 or cursor.remaining == 0:
        raise GGUFFormatError("the file is empty (0 bytes)")
    magic = cursor.take(4, "magic")
    if magic != _MAGIC:
        raise GGUFFormatError(f"it starts with {magic!r} instead of the magic {_MAGIC!r}")
    version = cursor.unpack(_U32, "version")
    if version not in _SUPPORTED_VERSIONS:
        if int.from_bytes(version.to_bytes(4, "little"), "big") in (1, 2, 3):
            raise GGUFFormatError("big-endian GGUF is not supported; use a little-endian conversion of the model")
        raise GGUFFormatError(f"GGUF version {version} is not supported (only versions 2 and 3)")
    tensor_count = cursor.unpack(_U64, "tensor count")
    kv_count = cursor.unpack(_U64, "key/value count")
    if tensor_count > MAX_TENSOR_COUNT:
        raise GGUFFormatError(f"tensor count {tensor_count} is over the limit of {MAX_TENSOR_COUNT}")
    if kv_count > MAX_KV_COUNT:
        raise GGUFFormatError(f"key/value count {kv_count} is over the limit of {MAX_KV_COUNT}")
    needed = kv_count * _MIN_KV_BYTES + tensor_count * _MIN_TENSOR_INFO_BYTES
    if needed > cursor.remaining:
        raise GGUFTruncatedError(
            f"truncated file or corrupt counts: {kv_count} key/values and {tensor_count} tensor infos need "
            f"at least {needed} bytes but only {cursor.remaining} remain after the header"
        )

    metadata: dict[str, Any] = {}
    for index in range(kv_count):
        key = cursor.string(f"key #{index}")
        if key in metadata:  # llama.cpp refuses such files too
            raise GGUFFormatError(f"key {key!r} appears twice")
        value_type = cursor.unpack(_U32, f"value type of {key!r}")
        metadata[key] = _read_value(cursor, value_type, f"key {key!r}", depth=0)

    parameter_count = data_end = None
    kept: list[TensorInfo] | None = [] if keep_tensors else None
    if read_tensor_info:
        infos = [_read_tensor_info(cursor, index, kept) for index in range(tensor_count)]
        parameter_count = sum(elements for elements, _ in infos)
        data_end = _tensor_data_end(cursor.offset, metadata, infos)
        if size is not None and data_end > size:
            # A download or copy cut short keeps a perfect header: only the data's extent shows it.
            raise GGUFFormatError(
                f"truncated file: its tensor data should end at byte {data_end} but the file has {size} bytes"
            )
    tensors = tuple(kept) if kept is not None and read_tensor_info else None
    return GGUFHeader(version, tensor_count, kv_count, metadata, parameter_count, cursor.offset, data_end, tensors)


def _tensor_data_end(header_end: int, metadata: dict[str, Any], infos: list[tuple[int, int]]) -> int:
    alignment = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFFormatError(f"general.alignment {alignment!r} is not a power of two")
    data_start = -(-header_end // alignment) * alignment
    return data_start + max((end for _, end in infos), default=0)


def _read_value(cursor: _Cursor, value_type: int, what: str, depth: int) -> Any:
    scalar = _SCALARS.get(value_type)
    if scalar is not None:
        return cursor.unpack(scalar, what)
    if value_type == GGUFValueType.STRING:
        return cursor.string(what)
    if value_type == GGUFValueType.ARRAY:
        return _read_array(cursor, what, depth + 1)
    raise GGUFFormatError(f"{what} has unknown value type {value_type}")


def _read_array(cursor: _Cursor, what: str, depth: int) -> list[Any] | dict[str, Any]:
    item_type = cursor.unpack(_U32, f"element type of {what}")
    length = cursor.unpack(_U64, f"length of {what}")
    if item_type == GGUFValueType.ARRAY and depth >= MAX_ARRAY_DEPTH:
        raise GGUFFormatError(f"{what} nests arrays deeper than {MAX_ARRAY_DEPTH} levels")
    if length > MAX_ARRAY_LENGTH:
        raise GGUFFormatError(f"{what} is an array of {length} elements, over the limit of {MAX_ARRAY_LENGTH}")
    scalar = _SCALARS.get(item_type)
    if scalar is not None:
        item_size = scalar.size
    elif item_type == GGUFValueType.STRING:
        item_size = 8
    elif item_type == GGUFValueType.ARRAY:
        item_size = 12  # element type + length
    else:
        raise GGUFFormatError(f"{what} is an array of unknown value type {item_type}")
    if length * item_size > cursor.remaining:
        raise GGUFTruncatedError(
            f"truncated file: {what} is an array of {length} elements that needs at least "
            f"{length * item_size} bytes, but only {cursor.remaining} remain"
        )

    if length <= KEPT_ARRAY_LENGTH:
        return [_read_value(cursor, item_type, f"{what}[{i}]", depth) for i in range(length)]
    if scalar is not None:
        cursor.skip(length * item_size, what)
    elif item_type == GGUFValueType.STRING:
        cursor.skip_strings(length, f"an element of {what}")
    else:
        for i in range(length):  # inner arrays must be walked one by one; each is small or summarised
            _read_array(cursor, f"{what}[{i}]", depth + 1)
    return {"type": "array", "length": length}


def _read_tensor_info(cursor: _Cursor, index: int, kept: list[TensorInfo] | None = None) -> tuple[int, int]:
    """Reads one tensor info; returns its element count and where its data ends, relative to the data section.

    Appends its `TensorInfo` to `kept` when given."""
    name = cursor.string(f"name of tensor #{index}")
    n_dims = cursor.unpack(_U32, f"dimension count of tensor {name!r}")
    if n_dims > MAX_TENSOR_DIMS:
        raise GGUFFormatError(f"tensor {name!r} has {n_dims} dimensions, over the limit of {MAX_TENSOR_DIMS}")
    elements = 1
    shape = []
    for _ in range(n_dims):
        shape.append(cursor.unpack(_U64, f"dimensions of tensor {name!r}"))
        elements *= shape[-1]
    if elements > _MAX_ELEMENTS:
        raise GGUFFormatError(f"tensor {name!r} claims {elements} elements, more than ggml can address")
    type_id = cursor.unpack(_U32, f"type of tensor {name!r}")
    offset = cursor.unpack(_U64, f"offset of tensor {name!r}")
    try:
        block_size, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
    except (ValueError, KeyError):
        raise GGUFFormatError(f"tensor {name!r} has unknown type {type_id}") from None
    n_bytes = elements // block_size * block_bytes
    if kept is not None:
        kept.append(TensorInfo(name, tuple(shape), type_id, n_bytes))
    return elements, offset + n_bytes


# --- quantization labels ---------------------------------------------------------------------------

# llama_ftype values that gguf.LlamaFileType no longer lists: the ARM repacks, retired from llama.cpp in 2024.
_RETIRED_FILE_TYPES = {33: "Q4_0_4_4", 34: "Q4_0_4_8", 35: "Q4_0_8_8"}
# Labels that quantizers put in file names without a llama_ftype of their own (bartowski's _L, unsloth's _XL).
_FILENAME_ONLY_LABELS = (
    *("Q2_K_L", "Q4_K_L", "Q5_K_L", "Q6_K_L"),
    *("Q2_K_XL", "Q3_K_XL", "Q4_K_XL", "Q5_K_XL", "Q6_K_XL", "Q8_K_XL"),
)


def _file_type_label(file_type: LlamaFileType) -> str:
    if file_type is LlamaFileType.ALL_F32:
        return "F32"
    label = file_type.name.removeprefix("MOSTLY_")
    # llama.cpp names the type after the MoE models it was made for; files and the Hub call it MXFP4.
    return "MXFP4" if label == "MXFP4_MOE" else label


_FILE_TYPE_LABELS: dict[int, str] = {
    **{int(t): _file_type_label(t) for t in LlamaFileType if t is not LlamaFileType.GUESSED},
    **_RETIRED_FILE_TYPES,
}
QUANTIZATION_LABELS: tuple[str, ...] = tuple(
    sorted(set(_FILE_TYPE_LABELS.values()) | set(_FILENAME_ONLY_LABELS), key=lambda label: (-len(label), label))
)
# Longest first so that Q4_K_M wins over a shorter label at the same place; a label must not touch a letter or digit.
_LABEL_PATTERN = re.compile(
    r"(?<![a-z0-9])(" + "|".join(map(re.escape, QUANTIZATION_LABELS)) + r")(?![a-z0-9])", re.IGNORECASE
)


def quantization_from_file_type(file_type: int | None) -> str | None:
    """The quantization label ("Q4_K_M", "F16", "MXFP4"...) of a `general.file_type` value, or None if unknown."""
    if not isinstance(file_type, int) or isinstance(file_type, bool):
        return None
    # llama.cpp marks a file type it inferred from the tensors with this flag; the label is the same.
    return _FILE_TYPE_LABELS.get(file_type & ~LlamaFileType.GUESSED)


def quantization_from_filename(filename: str) -> str | None:
    """The quantization label named in `filename` (or a repo path, whose folder may name it), or None.

    Matching ignores case, needs the label delimited by non-alphanumerics and prefers the longest label
    found; the result is spelled as in `QUANTIZATION_LABELS`.
    """
    matches = [match.group(1).upper() for match in _LABEL_PATTERN.finditer(filename)]
    if not matches:
        return None
    return max(reversed(matches), key=len)  # on a tie, the last one: the quantization usually ends the name


# --- file names ------------------------------------------------------------------------------------

_SPLIT_PATTERN = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_MMPROJ_PATTERN = re.compile(r"(?<![a-z])mmproj(?![a-z])", re.IGNORECASE)


@dataclass(frozen=True)
class SplitName:
    """One part of a model split by llama.cpp's gguf-split: `<stem>-<index>-of-<count>.gguf`, index from 1."""

    stem: str
    index: int
    count: int


def parse_split_name(filename: str) -> SplitName | None:
    """The split part that `filename` names, or None when it is not a valid part name.

    Valid means llama.cpp's 5-digit format with 1 <= index <= count and count >= 2. A directory in
    `filename` stays in the stem, so `split_part_names(stem, count)` gives back paths of the same form.
    """
    match = _SPLIT_PATTERN.match(filename)
    if match is None:
        return None
    index, count = int(match["index"]), int(match["count"])
    if not 1 <= index <= count or count < 2:
        return None
    return SplitName(stem=match["stem"], index=index, count=count)


def split_part_names(stem: str, count: int) -> list[str]:
    """The names of all `count` parts of a split model, in order: `<stem>-00001-of-<count>.gguf`, ..."""
    return [f"{stem}-{index:05d}-of-{count:05d}.gguf" for index in range(1, count + 1)]


def _basename(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


def is_mmproj(filename: str) -> bool:
    """Whether the base name of `filename` marks a multimodal projector ("mmproj-...", "....mmproj-Q8_0.gguf")."""
    return _MMPROJ_PATTERN.search(_basename(filename)) is not None


def is_gguf_filename(filename: str) -> bool:
    """Whether the base name of `filename` ends in ".gguf" (any case) and has a name before it."""
    name = _basename(filename)
    return len(name) > len(".gguf") and name.lower().endswith(".gguf")


# --- summary -----------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def summarize_metadata(header: GGUFHeader, filename: str) -> dict[str, Any]:
    """The `LocalModel.metadata` the API shows for a file: architecture, name, quantization and sizes.

    Every key is always present; values the header lacks (or holds with the wrong type) are None,
    except `split_count` (1 for an unsplit file) and the booleans. Raises nothing.
    """
    meta = header.metadata
    architecture = _text(meta.get("general.architecture"))
    file_type = _integer(meta.get("general.file_type"))
    parameter_count = _integer(meta.get("general.parameter_count"))
    template = meta.get("tokenizer.chat_template")
    return {
        "architecture": architecture,
        "name": _text(meta.get("general.name")),
        "quantization": quantization_from_file_type(file_type) or quantization_from_filename(filename),
        "file_type": file_type,
        "parameter_count": parameter_count if parameter_count is not None else header.parameter_count,
        "size_label": _text(meta.get("general.size_label")),
        "context_length": _integer(meta.get(f"{architecture}.context_length")) if architecture else None,
        "block_count": _integer(meta.get(f"{architecture}.block_count")) if architecture else None,
        "has_chat_template": bool(isinstance(template, str) and template.strip()),
        "split_count": _integer(meta.get("split.count")) or 1,
        "gguf_version": header.version,
        "is_mmproj": is_mmproj(filename) or meta.get("general.type") == "mmproj" or architecture == "clip",
    }
