"""How long reading a GGUF header takes, against gguf.GGUFReader, and that it does not grow with the file.

Run: .venv/bin/python bench/gguf_header.py [--size-gb 1]

Writes model-like files with gguf's GGUFWriter (a 150k-token vocabulary, a few tensors and one large
tensor), header only, then extends them with os.truncate so the tensor data is sparse zeros: a 1 GB
file costs no disk and no time to write. The files are deleted at the end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from model_manager.core.gguf_format import read_gguf_header

VOCAB_SIZE = 150_000
SMALL_TENSORS = 8
SMALL_TENSOR_SHAPE = (256, 256)
EMBEDDING_WIDTH = 4096


def write_sparse_model(path: Path, size_bytes: int) -> int:
    """Write at `path` a real GGUF model of about `size_bytes` whose tensor data is a sparse hole.

    Returns the model's parameter count.
    """
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("Bench Model")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(8192)
    writer.add_block_count(SMALL_TENSORS)
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}_{'x' * (i % 9)}" for i in range(VOCAB_SIZE)])
    writer.add_token_types([1] * VOCAB_SIZE)
    writer.add_token_scores([0.0] * VOCAB_SIZE)

    # F32 tensors: eight small blocks and one embedding large enough to bring the file to size_bytes.
    f32 = np.dtype(np.float32)
    small_elements = SMALL_TENSOR_SHAPE[0] * SMALL_TENSOR_SHAPE[1]
    rows = max(1, (size_bytes - SMALL_TENSORS * small_elements * 4) // (EMBEDDING_WIDTH * 4))
    shapes = {f"blk.{i}.weight": SMALL_TENSOR_SHAPE for i in range(SMALL_TENSORS)}
    shapes["token_embd.weight"] = (rows, EMBEDDING_WIDTH)
    for name, shape in shapes.items():
        writer.add_tensor_info(name, shape, f32, shape[0] * shape[1] * 4)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    assert writer.fout is not None
    header_end = writer.fout[0].tell()
    writer.close()

    pad = gguf.GGUFWriter.ggml_pad
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    data_bytes = sum(pad(shape[0] * shape[1] * 4, alignment) for shape in shapes.values())
    with open(path, "r+b") as file:
        file.truncate(pad(header_end, alignment) + data_bytes)  # the hole reads as zeros
    return sum(shape[0] * shape[1] for shape in shapes.values())


def median_ms(actions: list[Callable[[], object]], runs: int) -> list[float]:
    """The median time of each action in milliseconds; runs take turns so that a busy machine hurts all alike."""
    times: list[list[float]] = [[] for _ in actions]
    for _ in range(runs):
        for action, action_times in zip(actions, times):
            started = time.perf_counter()
            action()
            action_times.append((time.perf_counter() - started) * 1000)
    return [statistics.median(action_times) for action_times in times]


def read_with_gguf_reader(path: Path) -> None:
    reader = gguf.GGUFReader(path)
    for field in reader.fields.values():
        field.contents()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="size of the large file (default 1)")
    parser.add_argument("--runs", type=int, default=21, help="runs of our reader per file (default 21)")
    parser.add_argument("--reader-runs", type=int, default=2, help="runs of gguf.GGUFReader, ~20 s each (default 2)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gguf-bench-") as directory:
        large, small = Path(directory) / "large.gguf", Path(directory) / "small.gguf"
        parameters = write_sparse_model(large, int(args.size_gb * 1e9))
        write_sparse_model(small, 10_000_000)
        header = read_gguf_header(large)
        assert header.metadata["tokenizer.ggml.tokens"] == {"type": "array", "length": VOCAB_SIZE}
        assert header.parameter_count == parameters

        ours_large, ours_small = median_ms([lambda: read_gguf_header(large), lambda: read_gguf_header(small)], args.runs)
        [theirs] = median_ms([lambda: read_with_gguf_reader(large)], args.reader_runs)
        size_gb = large.stat().st_size / 1e9

    print(
        f"gguf_header: file {size_gb:.2f} GB, ours {ours_large:.1f} ms, gguf.GGUFReader {theirs:.1f} ms, "
        f"ratio {theirs / ours_large:.0f}x faster"
    )
    print(f"ours 10MB {ours_small:.1f} ms vs {args.size_gb:g}GB {ours_large:.1f} ms")


if __name__ == "__main__":
    main()
