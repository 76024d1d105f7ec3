"""The GGUF format module: header reading against real files and hostile bytes, labels and file names."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import pytest
from gguf import GGUFValueType

from model_manager.core.errors import InvalidFileError
from model_manager.core.gguf_format import (
    MAX_ARRAY_LENGTH,
    MAX_KV_COUNT,
    MAX_STRING_LENGTH,
    MAX_TENSOR_COUNT,
    QUANTIZATION_LABELS,
    GGUFFormatError,
    SplitName,
    is_gguf_filename,
    is_mmproj,
    parse_split_name,
    quantization_from_file_type,
    quantization_from_filename,
    read_gguf_header,
    split_part_names,
    summarize_metadata,
)
from tests.gguf_factory import write_gguf, write_mmproj, write_split_model

# --- hand-made bytes, only for files the writer refuses to produce ------------------------------------


def _string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _gguf(body: bytes = b"", *, version: int = 3, tensor_count: int = 0, kv_count: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensor_count, kv_count) + body


def _write(tmp_path: Path, data: bytes, name: str = "broken.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _read_gguf_reader(path: Path) -> dict[str, object]:
    """What gguf's own reader finds: scalars and strings by value, arrays by length."""
    found: dict[str, object] = {}
    for field in gguf.GGUFReader(path).fields.values():
        if field.name.startswith("GGUF."):  # the reader's pseudo-fields for the fixed header
            continue
        is_array = field.types[0] == GGUFValueType.ARRAY
        found[field.name] = len(field.data) if is_array else field.contents()
    return found


# --- real files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "file_type", "label"),
    [
        ("llama", gguf.LlamaFileType.MOSTLY_Q4_K_M, "Q4_K_M"),
        ("qwen2", gguf.LlamaFileType.MOSTLY_Q8_0, "Q8_0"),
        ("gemma3", gguf.LlamaFileType.MOSTLY_F16, "F16"),
        ("phi3", gguf.LlamaFileType.MOSTLY_BF16, "BF16"),
        ("llama", gguf.LlamaFileType.MOSTLY_IQ3_XXS, "IQ3_XXS"),
        ("qwen2", gguf.LlamaFileType.ALL_F32, "F32"),
        ("gemma3", gguf.LlamaFileType.MOSTLY_MXFP4_MOE, "MXFP4"),
    ],
)
def test_summary_reports_what_the_writer_wrote(tmp_path: Path, architecture: str, file_type: int, label: str) -> None:
    path = write_gguf(
        tmp_path / "model.gguf",
        architecture=architecture,
        name=f"{architecture} test",
        file_type=int(file_type),
        context_length=8192,
        block_count=3,
        size_label="7B",
        tensors=3,
        tensor_elements=48,
    )

    summary = summarize_metadata(read_gguf_header(path), path.name)

    assert summary == {
        "architecture": architecture,
        "name": f"{architecture} test",
        "quantization": label,
        "file_type": int(file_type),
        "parameter_count": 3 * 48,
        "size_label": "7B",
        "context_length": 8192,
        "block_count": 3,
        "has_chat_template": True,
        "split_count": 1,
        "gguf_version": 3,
        "is_mmproj": False,
    }


def test_parameter_count_is_the_sum_of_tensor_sizes(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "model.gguf", tensors=5, tensor_elements=96)

    header = read_gguf_header(path)

    assert header.tensor_count == 5
    assert header.parameter_count == 5 * 96
    assert header.parameter_count == sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)


def test_metadata_equals_what_gguf_reader_reads(tmp_path: Path) -> None:
    extra = {
        "test.u8": (200, GGUFValueType.UINT8),
        "test.i8": (-100, GGUFValueType.INT8),
        "test.u16": (60000, GGUFValueType.UINT16),
        "test.i16": (-30000, GGUFValueType.INT16),
        "test.u32": 4_000_000_000,
        "test.i32": (-2_000_000_000, GGUFValueType.INT32),
        "test.f32": 0.25,
        "test.bool": True,
        "test.u64": (2**64 - 1, GGUFValueType.UINT64),
        "test.i64": (-(2**63), GGUFValueType.INT64),
        "test.f64": (1e300, GGUFValueType.FLOAT64),
        "test.unicode": "héllo wörld ✓",
        "test.empty": "",
        "test.short_list": [1, 2, 3],
        "test.long_list": list(range(1000)),
        "test.short_strings": ["a", "bc"],
    }
    path = write_gguf(tmp_path / "model.gguf", extra_kv=extra, vocab_size=300)

    ours = read_gguf_header(path).metadata
    theirs = _read_gguf_reader(path)

    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        if isinstance(value, dict):
            assert value == {"type": "array", "length": theirs[key]}, key
        elif isinstance(value, list):
            assert len(value) == theirs[key], key
        else:
            assert value == theirs[key], key
    assert ours["test.short_strings"] == ["a", "bc"]
    assert ours["tokenizer.ggml.tokens"] == {"type": "array", "length": 300}


def test_arrays_up_to_64_entries_keep_their_values(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "model.gguf", vocab_size=64, extra_kv={"test.list": list(range(65))})

    metadata = read_gguf_header(path).metadata

    assert metadata["tokenizer.ggml.tokens"] == [f"tok{i}" for i in range(64)]
    assert metadata["test.list"] == {"type": "array", "length": 65}


def test_arrays_of_arrays_are_read_two_levels_deep(tmp_path: Path) -> None:
    nested = [[1, 2], [3]]
    long_nested = [[i] for i in range(100)]
    path = write_gguf(tmp_path / "model.gguf", extra_kv={"test.nested": nested, "test.long_nested": long_nested})

    metadata = read_gguf_header(path).metadata

    assert metadata["test.nested"] == nested
    assert metadata["test.long_nested"] == {"type": "array", "length": 100}


def test_long_vocabulary_is_skipped_across_buffer_refills(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "model.gguf", vocab_size=60_000, extra_kv={"test.after": "still here"})

    header = read_gguf_header(path)

    assert header.metadata["tokenizer.ggml.tokens"] == {"type": "array", "length": 60_000}
    assert header.metadata["test.after"] == "still here"
    assert header.parameter_count == 2 * 64


def test_header_size_ends_where_tensor_data_may_start(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "model.gguf")

    full = read_gguf_header(path)
    kv_only = read_gguf_header(path, read_tensor_info=False)

    data_offset = gguf.GGUFReader(path).data_offset
    assert data_offset - 32 < full.header_size <= data_offset  # tensor data is aligned to 32 bytes
    assert kv_only.parameter_count is None
    assert kv_only.header_size < full.header_size
    assert kv_only.metadata == full.metadata


def test_tensor_data_is_never_read(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "model.gguf", tensor_elements=4096)
    header_size = read_gguf_header(path).header_size
    with open(path, "r+b") as file:  # garbage in the data section changes nothing the reader returns
        file.seek(header_size)
        file.write(b"\xff" * (path.stat().st_size - header_size))

    assert read_gguf_header(path).parameter_count == 2 * 4096


def test_tensor_data_extent_matches_the_file_size(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "model.gguf", tensor_elements=4096)

    assert read_gguf_header(path).data_end == path.stat().st_size


def test_file_cut_short_in_its_tensor_data_is_refused(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "model.gguf", tensor_elements=4096)
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size - 1)

    with pytest.raises(GGUFFormatError, match="truncated"):
        read_gguf_header(path)
    assert read_gguf_header(path, read_tensor_info=False).data_end is None


def test_version_2_is_read_like_version_3(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "model.gguf")
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    path.write_bytes(data)

    header = read_gguf_header(path)

    assert header.version == 2
    assert header.metadata["general.name"] == "Test Model"


# --- split files and projectors -----------------------------------------------------------------------


def test_split_parts_are_recognised_by_name_and_header(tmp_path: Path) -> None:
    parts = write_split_model(tmp_path, "Qwen-Q4_K_M", 3)

    assert [p.name for p in parts] == split_part_names("Qwen-Q4_K_M", 3)
    for index, part in enumerate(parts, start=1):
        header = read_gguf_header(part)
        assert parse_split_name(part.name) == SplitName(stem="Qwen-Q4_K_M", index=index, count=3)
        assert header.metadata["split.no"] == index - 1
        assert summarize_metadata(header, part.name)["split_count"] == 3


def test_mmproj_is_recognised_by_header_alone(tmp_path: Path) -> None:
    path = write_mmproj(tmp_path / "vision.gguf")

    summary = summarize_metadata(read_gguf_header(path), path.name)

    assert summary["is_mmproj"] is True
    assert summary["architecture"] == "clip"
    assert summary["quantization"] == "F16"


def test_mmproj_is_recognised_by_name_alone(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "mmproj-model-f16.gguf")

    assert summarize_metadata(read_gguf_header(path), path.name)["is_mmproj"] is True


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("mmproj-model-f16.gguf", True),
        ("Foo.mmproj-Q8_0.gguf", True),
        ("MMPROJ-F16.GGUF", True),
        ("models/mmproj/Llama-Q4_K_M.gguf", False),  # only the base name counts
        ("Llama-3-8B.Q4_K_M.gguf", False),
    ],
)
def test_is_mmproj(filename: str, expected: bool) -> None:
    assert is_mmproj(filename) is expected


@pytest.mark.parametrize(
    ("filename", "expected"),
    [("a.gguf", True), ("dir/A.GGUF", True), (".gguf", False), ("a.gguf.part", False), ("a.bin", False)],
)
def test_is_gguf_filename(filename: str, expected: bool) -> None:
    assert is_gguf_filename(filename) is expected


# --- broken inputs -------------------------------------------------------------------------------------


def _kv(key: bytes, value_type: int, payload: bytes) -> bytes:
    return _string(key) + struct.pack("<I", value_type) + payload


def _array(item_type: int, length: int, payload: bytes = b"") -> bytes:
    return struct.pack("<IQ", item_type, length) + payload


_PADDING = b"\0" * 64  # room so that count checks pass and the field itself is judged
_ARRAY = GGUFValueType.ARRAY
_TENSOR_9_DIMS = _string(b"t") + struct.pack("<I", 9) + struct.pack("<9Q", *[1] * 9) + struct.pack("<IQ", 0, 0)

BROKEN_INPUTS = {
    "wrong magic": (b"GGML" + _gguf()[4:], "instead of the magic"),
    "version 1": (_gguf(version=1), "version 1 is not supported"),
    "version 4": (_gguf(version=4), "version 4 is not supported"),
    "byte-swapped version": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian GGUF is not supported"),
    "tensor count 2**63": (_gguf(tensor_count=2**63), f"over the limit of {MAX_TENSOR_COUNT}"),
    "kv count 2**63": (_gguf(kv_count=2**63), f"over the limit of {MAX_KV_COUNT}"),
    "counts larger than the file": (_gguf(_PADDING, kv_count=1000), "truncated"),
    "key length 2**40": (_gguf(struct.pack("<Q", 2**40) + _PADDING, kv_count=1), f"over the limit of {MAX_STRING_LENGTH}"),
    "string past end of file": (_gguf(_kv(b"k", GGUFValueType.STRING, struct.pack("<Q", 500) + b"x"), kv_count=1), "runs past the end"),
    "array length 2**62": (_gguf(_kv(b"k", _ARRAY, _array(GGUFValueType.UINT8, 2**62)), kv_count=1), f"over the limit of {MAX_ARRAY_LENGTH}"),
    "array longer than the file": (_gguf(_kv(b"k", _ARRAY, _array(GGUFValueType.UINT32, 1000) + _PADDING), kv_count=1), "truncated"),
    "long string array past end of file": (
        _gguf(_kv(b"k", _ARRAY, _array(GGUFValueType.STRING, 100, _string(b"a") * 99 + struct.pack("<Q", 5000))), kv_count=1),
        "an element of key 'k' of 5000 bytes at offset 940 runs past the end",
    ),
    "unknown value type": (_gguf(_kv(b"k", 13, _PADDING), kv_count=1), "unknown value type 13"),
    "unknown array element type": (_gguf(_kv(b"k", _ARRAY, _array(99, 1) + _PADDING), kv_count=1), "unknown value type 99"),
    "arrays nested three deep": (
        _gguf(_kv(b"k", _ARRAY, _array(_ARRAY, 1, _array(_ARRAY, 1, _array(GGUFValueType.UINT8, 1, b"\1")))), kv_count=1),
        "nests arrays deeper than 2",
    ),
    "duplicate key": (_gguf(_kv(b"k", GGUFValueType.UINT8, b"\1") * 2, kv_count=2), "'k' appears twice"),
    "tensor with 9 dimensions": (_gguf(_TENSOR_9_DIMS, tensor_count=1), "9 dimensions"),
    "empty file": (b"", "empty"),
    "shorter than the magic": (b"GG", "truncated"),
}


@pytest.mark.parametrize(("data", "message"), BROKEN_INPUTS.values(), ids=BROKEN_INPUTS.keys())
def test_broken_input_is_rejected_with_a_clear_message(tmp_path: Path, data: bytes, message: str) -> None:
    path = _write(tmp_path, data)

    with pytest.raises(GGUFFormatError, match=message) as caught:
        read_gguf_header(path)

    assert isinstance(caught.value, InvalidFileError)
    assert caught.value.message.startswith("broken.gguf is not a readable GGUF file")
    assert caught.value.details == {"path": str(path)}


def test_truncation_at_every_byte_of_the_header_is_reported(tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "model.gguf", vocab_size=4).read_bytes()
    header_size = read_gguf_header(tmp_path / "model.gguf").header_size
    path = tmp_path / "prefix.gguf"

    for length in range(1, header_size):
        path.write_bytes(data[:length])
        with pytest.raises(GGUFFormatError, match="truncated"):
            read_gguf_header(path)


def test_header_without_tensor_infos_can_be_read_up_to_the_key_values(tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "model.gguf").read_bytes()
    kv_end = read_gguf_header(tmp_path / "model.gguf", read_tensor_info=False).header_size
    path = _write(tmp_path, data[: kv_end + 100])  # mid tensor infos: enough for the count check

    assert read_gguf_header(path, read_tensor_info=False).metadata["general.name"] == "Test Model"
    with pytest.raises(GGUFFormatError, match="truncated"):
        read_gguf_header(path)


def test_unreadable_paths_raise_os_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_gguf_header(tmp_path / "missing.gguf")
    with pytest.raises(IsADirectoryError):
        read_gguf_header(tmp_path)


# --- quantization labels ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_type", "label"),
    [
        (0, "F32"),
        (1, "F16"),
        (7, "Q8_0"),
        (15, "Q4_K_M"),
        (18, "Q6_K"),
        (23, "IQ3_XXS"),
        (30, "IQ4_XS"),
        (32, "BF16"),
        (33, "Q4_0_4_4"),
        (36, "TQ1_0"),
        (38, "MXFP4"),
        (15 | 1024, "Q4_K_M"),  # llama.cpp's "guessed" flag
        (999, None),
        (-1, None),
        (None, None),
        (True, None),
    ],
)
def test_quantization_from_file_type(file_type: int | None, label: str | None) -> None:
    assert quantization_from_file_type(file_type) == label


@pytest.mark.parametrize(
    ("filename", "label"),
    [
        ("Llama-3-8B-Instruct.Q4_K_M.gguf", "Q4_K_M"),
        ("model-iq3_xxs-00001-of-00002.gguf", "IQ3_XXS"),
        ("x-bf16.gguf", "BF16"),
        ("x-Q8_0.gguf", "Q8_0"),
        ("x-f16.gguf", "F16"),
        ("x-Q4_0_4_4.gguf", "Q4_0_4_4"),
        ("x-Q2_K_S.gguf", "Q2_K_S"),
        ("x-Q3_K_L.gguf", "Q3_K_L"),
        ("x-IQ4_NL.gguf", "IQ4_NL"),
        ("x-IQ4_XS.gguf", "IQ4_XS"),
        ("x-IQ1_S.gguf", "IQ1_S"),
        ("x-IQ1_M.gguf", "IQ1_M"),
        ("x-IQ2_XXS.gguf", "IQ2_XXS"),
        ("x-IQ2_XS.gguf", "IQ2_XS"),
        ("x-IQ2_S.gguf", "IQ2_S"),
        ("x-IQ2_M.gguf", "IQ2_M"),
        ("x-IQ3_XS.gguf", "IQ3_XS"),
        ("x-IQ3_S.gguf", "IQ3_S"),
        ("x-IQ3_M.gguf", "IQ3_M"),
        ("x-TQ1_0.gguf", "TQ1_0"),
        ("x-TQ2_0.gguf", "TQ2_0"),
        ("x-Q6_K.gguf", "Q6_K"),
        ("x-Q5_K_M.gguf", "Q5_K_M"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("gpt-oss-20b-MXFP4_MOE.gguf", "MXFP4"),
        ("Qwen3-8B-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("Q8_0/Model-00001-of-00002.gguf", "Q8_0"),
        ("Model-F16-Q4_K_M.gguf", "Q4_K_M"),  # the longest label wins
        ("myq4model.gguf", None),
        ("myq4_0model.gguf", None),
        ("model.gguf", None),
    ],
)
def test_quantization_from_filename(filename: str, label: str | None) -> None:
    assert quantization_from_filename(filename) == label


def test_every_file_type_label_is_a_known_label() -> None:
    labels = {quantization_from_file_type(int(t)) for t in gguf.LlamaFileType} - {None}

    assert labels <= set(QUANTIZATION_LABELS)
    assert all(quantization_from_filename(f"model-{label.lower()}.gguf") == label for label in QUANTIZATION_LABELS)


# --- split names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("Qwen-Q4_K_M-00002-of-00003.gguf", SplitName("Qwen-Q4_K_M", 2, 3)),
        ("Qwen-Q4_K_M-00003-of-00003.gguf", SplitName("Qwen-Q4_K_M", 3, 3)),
        ("Q4_K_M/Qwen-00001-of-00002.gguf", SplitName("Q4_K_M/Qwen", 1, 2)),
        ("x-00000-of-00003.gguf", None),
        ("x-00004-of-00003.gguf", None),
        ("x-00001-of-00001.gguf", None),
        ("x-1-of-3.gguf", None),
        ("-00001-of-00003.gguf", None),
        ("x-00001-of-00003.bin", None),
        ("x.gguf", None),
    ],
)
def test_parse_split_name(filename: str, expected: SplitName | None) -> None:
    assert parse_split_name(filename) == expected


def test_split_part_names_round_trip_through_parse() -> None:
    names = split_part_names("Llama-Q8_0", 3)

    assert names == ["Llama-Q8_0-00001-of-00003.gguf", "Llama-Q8_0-00002-of-00003.gguf", "Llama-Q8_0-00003-of-00003.gguf"]
    assert [parse_split_name(n) for n in names] == [SplitName("Llama-Q8_0", i, 3) for i in (1, 2, 3)]


# --- summary fallbacks ---------------------------------------------------------------------------------


def test_summary_takes_quantization_from_the_filename_without_a_file_type(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "Model.IQ4_XS.gguf", file_type=None)

    assert summarize_metadata(read_gguf_header(path), path.name)["quantization"] == "IQ4_XS"


def test_summary_leaves_missing_facts_empty(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "model.gguf",
        file_type=None,
        chat_template=None,
        size_label=None,
        extra_kv={"tokenizer.chat_template": "  "},
    )

    summary = summarize_metadata(read_gguf_header(path), path.name)

    assert summary["quantization"] is None
    assert summary["file_type"] is None
    assert summary["size_label"] is None
    assert summary["has_chat_template"] is False


def test_summary_prefers_the_declared_parameter_count(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "model.gguf", extra_kv={"general.parameter_count": (8_030_261_248, GGUFValueType.UINT64)})

    assert summarize_metadata(read_gguf_header(path), path.name)["parameter_count"] == 8_030_261_248
