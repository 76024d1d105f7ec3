"""Small GGUF files of real architectures with random weights, that llama.cpp loads.

Written with the `gguf` package's `GGUFWriter`: real key/values, an SPM vocabulary of `n_vocab` tokens,
and every tensor each architecture's loader requires, with shapes as llama.cpp expects them. The
weights are random, so the models talk nonsense; their memory layout is what the fit tests measure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType
from gguf.quants import quantize


@dataclass(frozen=True)
class Spec:
    """The shape of a test model. `weight_type` applies to 2-D matrices; norms and biases stay F32."""

    architecture: str
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 8
    n_head_kv: int = 2
    head_dim: int | None = None  # None: n_embd / n_head, and no key_length keys are written
    n_ff: int = 512
    n_vocab: int = 32000
    context_length: int = 32768
    weight_type: GGMLQuantizationType = GGMLQuantizationType.F16
    tied_output: bool = False
    qkv_bias: bool = False
    sliding_window: int | None = None
    n_expert: int = 0
    n_expert_used: int = 0


LLAMA_GQA = Spec("llama", n_layer=4, n_head=8, n_head_kv=2, n_ff=688)
QWEN2 = Spec("qwen2", n_layer=4, n_head=8, n_head_kv=2, qkv_bias=True, tied_output=True,
             weight_type=GGMLQuantizationType.Q8_0, n_vocab=48000)
GEMMA3 = Spec("gemma3", n_layer=12, n_embd=256, n_head=4, n_head_kv=1, head_dim=128, n_ff=512,
              sliding_window=512, tied_output=True, n_vocab=40000)
LLAMA_MOE = Spec("llama", n_layer=4, n_head=8, n_head_kv=4, n_ff=256, n_expert=4, n_expert_used=2)

_FILE_TYPES = {
    GGMLQuantizationType.F16: LlamaFileType.MOSTLY_F16,
    GGMLQuantizationType.Q8_0: LlamaFileType.MOSTLY_Q8_0,
    GGMLQuantizationType.F32: LlamaFileType.ALL_F32,
}


def write_model(path: str | os.PathLike[str], spec: Spec, seed: int = 0) -> Path:
    """Write the model `spec` describes to `path` and return the path."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    arch = spec.architecture
    head_dim = spec.head_dim or spec.n_embd // spec.n_head
    writer = GGUFWriter(path, arch)
    writer.add_name(f"test {arch}")
    writer.add_file_type(_FILE_TYPES[spec.weight_type])
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    if spec.head_dim is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if spec.sliding_window:
        writer.add_sliding_window(spec.sliding_window)
    if spec.n_expert:
        writer.add_expert_count(spec.n_expert)
        writer.add_expert_used_count(spec.n_expert_used)
    _add_vocabulary(writer, spec.n_vocab)

    def matrix(name: str, *shape: int) -> None:
        data = (rng.standard_normal(shape, dtype=np.float32) * 0.02)
        if spec.weight_type == GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        elif spec.weight_type == GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, quantize(data, spec.weight_type), raw_dtype=spec.weight_type)

    def vector(name: str, n: int) -> None:
        writer.add_tensor(name, np.ones(n, dtype=np.float32))

    q_dim, kv_dim = spec.n_head * head_dim, spec.n_head_kv * head_dim
    matrix("token_embd.weight", spec.n_vocab, spec.n_embd)
    vector("output_norm.weight", spec.n_embd)
    if not spec.tied_output:
        matrix("output.weight", spec.n_vocab, spec.n_embd)
    for i in range(spec.n_layer):
        blk = f"blk.{i}"
        vector(f"{blk}.attn_norm.weight", spec.n_embd)
        matrix(f"{blk}.attn_q.weight", q_dim, spec.n_embd)
        matrix(f"{blk}.attn_k.weight", kv_dim, spec.n_embd)
        matrix(f"{blk}.attn_v.weight", kv_dim, spec.n_embd)
        matrix(f"{blk}.attn_output.weight", spec.n_embd, q_dim)
        if spec.qkv_bias:
            vector(f"{blk}.attn_q.bias", q_dim)
            vector(f"{blk}.attn_k.bias", kv_dim)
            vector(f"{blk}.attn_v.bias", kv_dim)
        if arch == "gemma3":
            vector(f"{blk}.attn_q_norm.weight", head_dim)
            vector(f"{blk}.attn_k_norm.weight", head_dim)
            vector(f"{blk}.post_attention_norm.weight", spec.n_embd)
            vector(f"{blk}.post_ffw_norm.weight", spec.n_embd)
        vector(f"{blk}.ffn_norm.weight", spec.n_embd)
        if spec.n_expert:
            writer.add_tensor(f"{blk}.ffn_gate_inp.weight",
                              rng.standard_normal((spec.n_expert, spec.n_embd), dtype=np.float32))
            matrix(f"{blk}.ffn_gate_exps.weight", spec.n_expert, spec.n_ff, spec.n_embd)
            matrix(f"{blk}.ffn_up_exps.weight", spec.n_expert, spec.n_ff, spec.n_embd)
            matrix(f"{blk}.ffn_down_exps.weight", spec.n_expert, spec.n_embd, spec.n_ff)
        else:
            matrix(f"{blk}.ffn_gate.weight", spec.n_ff, spec.n_embd)
            matrix(f"{blk}.ffn_up.weight", spec.n_ff, spec.n_embd)
            matrix(f"{blk}.ffn_down.weight", spec.n_embd, spec.n_ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_vocabulary(writer: GGUFWriter, n_vocab: int) -> None:
    # SPM ("llama") vocabulary: 3 control tokens, the 256 byte tokens, then plain pieces.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    tokens += [f"\u2581t{i}" for i in range(n_vocab - len(tokens))]
    types += [1] * (n_vocab - len(types))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * n_vocab)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)


def _start(path: Path, arch: str, n_layer: int, n_embd: int, n_vocab: int) -> GGUFWriter:
    writer = GGUFWriter(path, arch)
    writer.add_name(f"test {arch}")
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    writer.add_context_length(32768)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_layer_norm_rms_eps(1e-6)
    _add_vocabulary(writer, n_vocab)
    return writer


def _finish(writer: GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_deepseek2_mla(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """A DeepSeek-V2-shaped MoE with MLA, as current converters write it: the latent cache's sizes in
    key/value_length with one KV head, the per-head sizes in key/value_length_mla, split k_b/v_b."""
    path, rng = Path(path), np.random.default_rng(seed)
    n_layer, n_embd, n_head, n_vocab, n_ff = 3, 256, 4, 32000, 512
    q_lora, kv_lora, rope, nope, v_head, n_expert, expert_ff = 96, 64, 16, 32, 32, 4, 128
    writer = _start(path, "deepseek2", n_layer, n_embd, n_vocab)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(1)
    writer.add_key_length(kv_lora + rope)
    writer.add_value_length(kv_lora)
    writer.add_key_length_mla(nope + rope)
    writer.add_value_length_mla(v_head)
    writer.add_kv_lora_rank(kv_lora)
    writer.add_q_lora_rank(q_lora)
    writer.add_rope_dimension_count(rope)
    writer.add_rope_freq_base(10000.0)
    writer.add_leading_dense_block_count(1)
    writer.add_expert_count(n_expert)
    writer.add_expert_used_count(2)
    writer.add_expert_feed_forward_length(expert_ff)
    writer.add_expert_shared_count(1)
    writer.add_expert_weights_scale(1.0)

    def f16(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16))

    def ones(name: str, n: int) -> None:
        writer.add_tensor(name, np.ones(n, dtype=np.float32))

    f16("token_embd.weight", n_vocab, n_embd)
    ones("output_norm.weight", n_embd)
    f16("output.weight", n_vocab, n_embd)
    for i in range(n_layer):
        blk = f"blk.{i}"
        ones(f"{blk}.attn_norm.weight", n_embd)
        f16(f"{blk}.attn_q_a.weight", q_lora, n_embd)
        ones(f"{blk}.attn_q_a_norm.weight", q_lora)
        f16(f"{blk}.attn_q_b.weight", n_head * (nope + rope), q_lora)
        f16(f"{blk}.attn_kv_a_mqa.weight", kv_lora + rope, n_embd)
        ones(f"{blk}.attn_kv_a_norm.weight", kv_lora)
        f16(f"{blk}.attn_k_b.weight", n_head, kv_lora, nope)
        f16(f"{blk}.attn_v_b.weight", n_head, v_head, kv_lora)
        f16(f"{blk}.attn_output.weight", n_embd, n_head * v_head)
        ones(f"{blk}.ffn_norm.weight", n_embd)
        if i == 0:
            f16(f"{blk}.ffn_gate.weight", n_ff, n_embd)
            f16(f"{blk}.ffn_up.weight", n_ff, n_embd)
            f16(f"{blk}.ffn_down.weight", n_embd, n_ff)
            continue
        writer.add_tensor(f"{blk}.ffn_gate_inp.weight", rng.standard_normal((n_expert, n_embd), dtype=np.float32))
        f16(f"{blk}.ffn_gate_exps.weight", n_expert, expert_ff, n_embd)
        f16(f"{blk}.ffn_up_exps.weight", n_expert, expert_ff, n_embd)
        f16(f"{blk}.ffn_down_exps.weight", n_expert, n_embd, expert_ff)
        f16(f"{blk}.ffn_gate_shexp.weight", expert_ff, n_embd)
        f16(f"{blk}.ffn_up_shexp.weight", expert_ff, n_embd)
        f16(f"{blk}.ffn_down_shexp.weight", n_embd, expert_ff)
    _finish(writer)
    return path


def write_mamba(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """A Mamba (recurrent, no attention): each layer holds a conv state and an SSM state, not a KV cache."""
    path, rng = Path(path), np.random.default_rng(seed)
    n_layer, n_embd, n_vocab, d_inner, d_conv, d_state, dt_rank = 4, 256, 32000, 512, 4, 16, 16
    writer = _start(path, "mamba", n_layer, n_embd, n_vocab)
    writer.add_feed_forward_length(0)
    writer.add_head_count(0)
    writer.add_ssm_conv_kernel(d_conv)
    writer.add_ssm_inner_size(d_inner)
    writer.add_ssm_state_size(d_state)
    writer.add_ssm_time_step_rank(dt_rank)

    def f32(name: str, *shape: int) -> None:
        writer.add_tensor(name, rng.standard_normal(shape, dtype=np.float32) * 0.02)

    def f16(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16))

    f16("token_embd.weight", n_vocab, n_embd)
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    f16("output.weight", n_vocab, n_embd)
    for i in range(n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        f16(f"{blk}.ssm_in.weight", 2 * d_inner, n_embd)
        f32(f"{blk}.ssm_conv1d.weight", d_inner, d_conv)
        f32(f"{blk}.ssm_conv1d.bias", d_inner)
        f16(f"{blk}.ssm_x.weight", dt_rank + 2 * d_state, d_inner)
        f16(f"{blk}.ssm_dt.weight", d_inner, dt_rank)
        f32(f"{blk}.ssm_dt.bias", d_inner)
        f32(f"{blk}.ssm_a", d_inner, d_state)
        f32(f"{blk}.ssm_d", d_inner)
        f16(f"{blk}.ssm_out.weight", n_embd, d_inner)
    _finish(writer)
    return path


ARCHITECTURES = {"llama-gqa": LLAMA_GQA, "qwen2": QWEN2, "gemma3-swa": GEMMA3, "llama-moe": LLAMA_MOE}
# Architectures with a writer of their own (MLA, recurrent): name -> function(path) -> path
OTHER_WRITERS = {"deepseek2-mla": write_deepseek2_mla, "mamba": write_mamba}
__all__ = ["ARCHITECTURES", "OTHER_WRITERS", "Spec", "replace", "write_model"]
