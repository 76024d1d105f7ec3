"""Headers of big models, for the fake Hub: what a Hub file's first bytes hold, and nothing after.

`llama_header_bytes` writes, with the `gguf` package's `GGUFWriter`, the key/values and tensor infos
of a Llama-3.2-1B-shaped model in one quantization (every matrix of that type, norms in F32), with a
full vocabulary and merge list, and stops where the tensor data would start. Reading the header is all
the fit estimate does with a Hub file, so that is all the fake Hub needs to serve.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, LlamaFileType

# Each label's type for the matrices (a real Q4_K_M mixes Q4_K and Q6_K; one type is close enough here).
QUANT_TYPES = {
    "F16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "Q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "Q6_K": (GGMLQuantizationType.Q6_K, LlamaFileType.MOSTLY_Q6_K),
    "Q5_K_M": (GGMLQuantizationType.Q5_K, LlamaFileType.MOSTLY_Q5_K_M),
    "Q4_K_M": (GGMLQuantizationType.Q4_K, LlamaFileType.MOSTLY_Q4_K_M),
    "Q3_K_M": (GGMLQuantizationType.Q3_K, LlamaFileType.MOSTLY_Q3_K_M),
}
N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, N_FF = 16, 2048, 32, 8, 8192
HEAD_DIM = N_EMBD // N_HEAD
_cache: dict[tuple, bytes] = {}


def _nbytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * size


def llama_header_bytes(quantization: str, n_vocab: int = 150_000, split: tuple[int, int] | None = None) -> bytes:
    """The header of a Llama-3.2-1B-shaped GGUF in `quantization` (a key of QUANT_TYPES).

    `split` = (index from 1, count) writes one part of a split model: the first part holds the
    key/values and the embeddings, each part a share of the layers.
    """
    key = (quantization, n_vocab, split)
    if key in _cache:
        return _cache[key]
    qtype, file_type = QUANT_TYPES[quantization]
    index, count = split or (1, 1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.gguf"
        writer = GGUFWriter(path, "llama")
        if index == 1:
            writer.add_name("Llama 3.2 1B Instruct")
            writer.add_file_type(file_type)
            writer.add_context_length(131072)
            writer.add_embedding_length(N_EMBD)
            writer.add_block_count(N_LAYER)
            writer.add_feed_forward_length(N_FF)
            writer.add_head_count(N_HEAD)
            writer.add_head_count_kv(N_HEAD_KV)
            writer.add_rope_freq_base(500000.0)
            writer.add_layer_norm_rms_eps(1e-5)
            writer.add_tokenizer_model("gpt2")
            writer.add_tokenizer_pre("llama-bpe")
            writer.add_token_list([f"t{i}" for i in range(n_vocab)])
            writer.add_token_types([1] * n_vocab)
            writer.add_token_merges([f"t{i} t{i + 1}" for i in range(n_vocab)])
            writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
        if split:
            writer.add_uint16("split.no", index - 1)
            writer.add_uint16("split.count", count)
            writer.add_int32("split.tensors.count", 0)

        def tensor(name: str, shape: tuple[int, ...], type_: GGMLQuantizationType) -> None:
            # GGUFWriter takes numpy's shape order (the reverse of ggml's), in bytes along the last axis
            block, size = GGML_QUANT_SIZES[type_]
            byte_shape = (*shape[:-1], shape[-1] // block * size)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), _nbytes(shape, type_), raw_dtype=type_)

        f32 = GGMLQuantizationType.F32
        if index == 1:
            tensor("token_embd.weight", (n_vocab, N_EMBD), qtype)
            tensor("output_norm.weight", (N_EMBD,), f32)
        per_part = -(-N_LAYER // count)
        for layer in range((index - 1) * per_part, min(index * per_part, N_LAYER)):
            blk = f"blk.{layer}"
            tensor(f"{blk}.attn_norm.weight", (N_EMBD,), f32)
            tensor(f"{blk}.ffn_norm.weight", (N_EMBD,), f32)
            tensor(f"{blk}.attn_q.weight", (N_HEAD * HEAD_DIM, N_EMBD), qtype)
            tensor(f"{blk}.attn_k.weight", (N_HEAD_KV * HEAD_DIM, N_EMBD), qtype)
            tensor(f"{blk}.attn_v.weight", (N_HEAD_KV * HEAD_DIM, N_EMBD), qtype)
            tensor(f"{blk}.attn_output.weight", (N_EMBD, N_HEAD * HEAD_DIM), qtype)
            tensor(f"{blk}.ffn_gate.weight", (N_FF, N_EMBD), qtype)
            tensor(f"{blk}.ffn_up.weight", (N_FF, N_EMBD), qtype)
            tensor(f"{blk}.ffn_down.weight", (N_EMBD, N_FF), qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.close()
        _cache[key] = path.read_bytes()
    return _cache[key]


def weights_bytes(quantization: str, n_vocab: int = 150_000) -> int:
    """The bytes of every tensor of that model (what the fit estimate must count as weights)."""
    qtype, _ = QUANT_TYPES[quantization]
    f32 = GGMLQuantizationType.F32
    layer = (2 * _nbytes((N_EMBD,), f32) + 2 * _nbytes((N_EMBD, N_EMBD), qtype)
             + 2 * _nbytes((N_HEAD_KV * HEAD_DIM, N_EMBD), qtype) + 3 * _nbytes((N_FF, N_EMBD), qtype))
    return _nbytes((n_vocab, N_EMBD), qtype) + _nbytes((N_EMBD,), f32) + N_LAYER * layer


__all__ = ["QUANT_TYPES", "io", "llama_header_bytes", "weights_bytes"]
