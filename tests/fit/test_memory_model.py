"""The memory model's formulas, on headers built in memory: layouts llama.cpp's accuracy tests do not cover
(per-layer head counts, recurrent layers, MLA, quantized caches) and the placement rules."""

from __future__ import annotations

import pytest

from model_manager.core.fit import QUALITY_ORDER, Target, estimate, model_shape, quality_rank
from model_manager.core.fit.compute import compute_bytes
from model_manager.core.fit.kv_cache import kv_cache_bytes, kv_cache_per_layer
from model_manager.core.fit.placement import GPU_MARGIN_BYTES, RUNTIME_OVERHEAD_BYTES
from model_manager.core.fit.shape import ShapeError
from model_manager.core.gguf_format import QUANTIZATION_LABELS, GGUFHeader, TensorInfo

MIB = 1024 * 1024
GIB = 1024 * MIB


def header(arch: str, keys: dict, layers: int, layer_bytes: int = MIB, embd_bytes: int = 10 * MIB,
           output: bool = True, n_vocab: int = 1000) -> GGUFHeader:
    metadata = {"general.architecture": arch, f"{arch}.block_count": layers,
                "tokenizer.ggml.tokens": {"type": "array", "length": n_vocab}}
    metadata.update({f"{arch}.{k}": v for k, v in keys.items()})
    tensors = [TensorInfo("token_embd.weight", (64, n_vocab), 1, embd_bytes),
               TensorInfo("output_norm.weight", (64,), 0, 256)]
    if output:
        tensors.append(TensorInfo("output.weight", (64, n_vocab), 1, embd_bytes))
    tensors += [TensorInfo(f"blk.{i}.attn_q.weight", (64, 64), 1, layer_bytes) for i in range(layers)]
    return GGUFHeader(3, len(tensors), len(metadata), metadata, None, 0, None, tuple(tensors))


LLAMA = {"embedding_length": 4096, "attention.head_count": 32, "attention.head_count_kv": 8, "context_length": 8192,
         "feed_forward_length": 14336}


def test_key_and_value_length_default_to_embedding_length_over_head_count():
    shape = model_shape([header("llama", LLAMA, 32)])
    assert (shape.key_length, shape.value_length) == (128, 128)
    # Llama 3 8B at 8192 tokens: 32 layers x 8 heads x 128 x (K + V) x 2 bytes x 8192 = 1 GiB
    assert kv_cache_bytes(shape, 8192) == GIB


def test_quantized_caches_take_34_or_18_bytes_per_32_values():
    shape = model_shape([header("llama", LLAMA, 32)])
    assert kv_cache_bytes(shape, 8192, "q8_0") == GIB // 2 * 34 // 32
    assert kv_cache_bytes(shape, 8192, "q4_0") == GIB // 2 * 18 // 32
    with pytest.raises(ValueError, match="unknown KV cache type"):
        kv_cache_bytes(shape, 8192, "q3_k")


def test_a_context_is_padded_to_256_cells():
    shape = model_shape([header("llama", LLAMA, 32)])
    assert kv_cache_bytes(shape, 1000) == kv_cache_bytes(shape, 1024) > kv_cache_bytes(shape, 768)


def test_head_count_kv_per_layer_and_recurrent_layers_hold_their_state():
    # A hybrid (Jamba-like): attention on 1 layer in 4, Mamba layers (0 KV heads) elsewhere.
    keys = {**LLAMA, "attention.head_count_kv": [0, 0, 0, 8] * 2, "ssm.conv_kernel": 4, "ssm.inner_size": 8192,
            "ssm.state_size": 16, "ssm.group_count": 0}
    shape = model_shape([header("jamba", keys, 8)])
    per_layer = kv_cache_per_layer(shape, 4096)
    state = 4 * ((4 - 1) * 8192 + 16 * 8192)  # f32 conv state + ssm state, one sequence
    assert per_layer == [state, state, state, 4096 * 8 * 256 * 2] * 2
    assert kv_cache_per_layer(shape, 32768)[0] == state  # the state does not grow with the context


def test_mla_holds_the_latent_cache():
    # As current converters write DeepSeek-V2-Lite: the latent's sizes in key/value_length, one KV head.
    keys = {"embedding_length": 2048, "attention.head_count": 16, "attention.head_count_kv": 1,
            "attention.key_length": 576, "attention.value_length": 512, "attention.key_length_mla": 192,
            "attention.value_length_mla": 128, "attention.kv_lora_rank": 512, "rope.dimension_count": 64}
    shape = model_shape([header("deepseek2", keys, 4)])
    assert kv_cache_bytes(shape, 4096) == 4 * 4096 * 576 * 2  # K only: llama.cpp reads V from K's first 512
    older = model_shape([header("deepseek2", {**keys, "attention.head_count_kv": 16, "attention.key_length": 192,
                                              "attention.value_length": 128, "attention.key_length_mla": None}, 4)])
    assert kv_cache_bytes(older, 4096) == 4 * 4096 * 16 * (192 + 128) * 2  # files from before MLA: full heads


def test_gemma3_slides_on_five_layers_of_six_and_the_rest_are_global():
    keys = {"embedding_length": 640, "attention.head_count": 4, "attention.head_count_kv": 1,
            "attention.key_length": 256, "attention.value_length": 256, "attention.sliding_window": 512}
    shape = model_shape([header("gemma3", keys, 18)])
    assert [i for i, swa in enumerate(shape.swa_layers) if not swa] == [5, 11, 17]
    per_layer = kv_cache_per_layer(shape, 32768)
    assert per_layer[5] == 32768 * 512 * 2 and per_layer[0] == 1024 * 512 * 2  # window 512 + ubatch 512


def test_an_unknown_window_layout_counts_every_layer_as_global():
    keys = {**LLAMA, "attention.sliding_window": 4096}
    shape = model_shape([header("newarch", keys, 4)])
    assert shape.swa_layers == [False] * 4
    assert kv_cache_bytes(shape, 32768) == 4 * 32768 * 8 * 256 * 2


def test_moe_compute_counts_the_chosen_experts():
    dense = model_shape([header("llama", LLAMA, 4)])
    moe = model_shape([header("qwen3moe", {**LLAMA, "expert_count": 128, "expert_used_count": 8,
                                           "expert_feed_forward_length": 768}, 4)])
    assert compute_bytes(moe, 4096) != compute_bytes(dense, 4096)
    assert compute_bytes(dense, 4096) >= 512 * 4 * 1000  # at least the logits of a micro-batch


def test_a_header_without_the_sizes_cannot_be_sized():
    with pytest.raises(ShapeError):
        model_shape([header("llama", {}, 4)])


def test_weights_group_into_layers_input_and_output():
    shape = model_shape([header("llama", LLAMA, 4, output=False)])
    assert shape.layer_bytes == [MIB] * 4
    assert shape.input_bytes == 10 * MIB and shape.tied_output
    assert shape.output_layer_gpu_bytes == 10 * MIB + 256  # a tied output is a copy of the embeddings on the GPU


def test_placement_full_partial_cpu_and_too_large():
    h = [header("llama", {**LLAMA, "context_length": 4096}, 32, layer_bytes=100 * MIB, n_vocab=128000)]
    cpu_total = estimate(h, Target(ram_bytes=64 * GIB), 4096)
    assert cpu_total.fit == "cpu" and cpu_total.gpu_layers == 0
    assert cpu_total.memory.overhead_bytes == RUNTIME_OVERHEAD_BYTES
    need = cpu_total.memory.weights_bytes + cpu_total.memory.kv_cache_bytes + cpu_total.memory.compute_bytes

    full = estimate(h, Target(ram_bytes=64 * GIB, gpu_free_bytes=(need + GPU_MARGIN_BYTES,)), 4096)
    assert full.fit == "full_gpu" and full.gpu_layers == 32
    assert full.memory.gpu_bytes <= need + GPU_MARGIN_BYTES

    partial = estimate(h, Target(ram_bytes=64 * GIB, gpu_free_bytes=(2 * GIB,)), 4096)
    assert partial.fit == "partial_gpu" and 0 < partial.gpu_layers < 32
    assert partial.memory.gpu_bytes <= 2 * GIB
    assert partial.max_context_full_gpu is None  # not even the shortest context puts it all on 2 GiB

    two = estimate(h, Target(ram_bytes=64 * GIB, gpu_free_bytes=(2 * GIB, 2 * GIB)), 4096)
    assert two.gpu_layers > partial.gpu_layers

    too_large = estimate(h, Target(ram_bytes=1 * GIB), 4096)
    assert too_large.fit == "too_large" and too_large.max_context_in_ram is None
    assert "only 1.0 GiB of RAM" in too_large.reasons[0]


def test_max_context_is_the_longest_that_still_fits():
    h = [header("llama", {**LLAMA, "context_length": 131072}, 32, layer_bytes=100 * MIB)]
    result = estimate(h, Target(ram_bytes=16 * GIB), 8192)
    longest = result.max_context_in_ram
    assert longest is not None and longest % 256 == 0
    assert estimate(h, Target(ram_bytes=16 * GIB), longest).fit == "cpu"
    assert estimate(h, Target(ram_bytes=16 * GIB), longest + 256).fit == "too_large"


def test_unified_memory_shares_one_pool():
    h = [header("llama", LLAMA, 32, layer_bytes=100 * MIB)]
    separate = estimate(h, Target(ram_bytes=4 * GIB, gpu_free_bytes=(8 * GIB,)), 4096)
    shared = estimate(h, Target(ram_bytes=4 * GIB, gpu_free_bytes=(8 * GIB,), unified_memory=True), 4096)
    assert separate.fit == "full_gpu"
    assert shared.fit == "cpu"  # the GPU's share and the CPU's would both come out of the same 4 GiB


def test_the_quality_order_is_one_table_covering_every_known_label():
    assert QUALITY_ORDER[:3] == ("F32", "BF16", "F16")
    assert quality_rank("Q8_0") < quality_rank("Q6_K") < quality_rank("Q5_K_M") < quality_rank("Q4_K_M")
    assert quality_rank("Q4_K_M") < quality_rank("Q3_K_M") < quality_rank("Q2_K") < quality_rank("IQ1_S")
    assert quality_rank("q4_k_m") == quality_rank("Q4_K_M")
    assert quality_rank(None) == quality_rank("nonsense") == len(QUALITY_ORDER)
    assert set(QUANTIZATION_LABELS) - set(QUALITY_ORDER) == set()
