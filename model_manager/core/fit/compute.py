"""The compute buffer: llama.cpp's scratch memory for one micro-batch of the default size (n_ubatch 512).

llama.cpp sizes it by reserving the worst-case graph, and its allocator reuses memory as tensors die,
so the buffer is about the largest stage of the graph, not the sum of them:

* the output stage holds the logits of every token of the micro-batch: n_vocab x n_ubatch floats (for
  small models with big vocabularies this is more than the weights);
* a layer stage holds the attention mask (cells x n_ubatch in f16, one per cache: global and sliding)
  and the activations of one layer, which the architecture family decides: a dense feed-forward, the
  chosen experts of a MoE, the projections of attention.

llama.cpp turns flash attention on by itself wherever the backend supports the head sizes (CPU, CUDA,
Metal and Vulkan do when keys and values have the same head size). Without it the attention scores
(n_head x cells x n_ubatch floats) and an f32 mask are materialized, which grows with the context.
"""

from __future__ import annotations

from model_manager.core.fit.kv_cache import DEFAULT_UBATCH, layer_cells
from model_manager.core.fit.shape import ModelShape

F32 = 4
F16 = 2


def _feed_forward_width(shape: ModelShape, layer: int) -> int:
    if shape.n_expert:
        expert_ff = shape.expert_ff or shape.n_ff[layer]
        # the router's logits per expert, the chosen experts' gate/up activations, the shared expert
        return shape.n_expert + shape.n_expert_used * expert_ff + shape.shared_expert_ff
    return shape.n_ff[layer]


def flash_attention(shape: ModelShape) -> bool:
    """Whether llama.cpp's "auto" turns flash attention on for this model (same K and V head size)."""
    return shape.key_length == shape.value_length


def compute_bytes(shape: ModelShape, context: int, ubatch: int = DEFAULT_UBATCH, flash: bool | None = None) -> int:
    """Estimated compute buffer of one context (and the logits output buffer), in bytes.

    `flash` None: as llama.cpp's default (see `flash_attention`)."""
    ubatch = min(ubatch, max(context, 1))
    flash = flash_attention(shape) if flash is None else flash
    output_stage = ubatch * F32 * (shape.n_vocab + 2 * shape.n_embd)
    layer_stage = 0
    attention = (shape.n_head * shape.key_length + 2 * max(shape.n_head_kv) * shape.key_length
                 + shape.n_head * shape.value_length)
    masks = {layer_cells(shape, i, context, ubatch) for i in range(shape.n_layer) if shape.n_head_kv[i]}
    mask_bytes = sum(cells * ubatch * (F16 if flash else F32) for cells in masks)
    if not flash:  # the scores of the widest layer: n_head x cells x ubatch floats
        mask_bytes += shape.n_head * max(masks, default=0) * ubatch * F32
    for layer in range(shape.n_layer):
        activations = ubatch * F32 * (3 * shape.n_embd + attention + 2 * _feed_forward_width(shape, layer))
        layer_stage = max(layer_stage, mask_bytes + activations)
        if len(set(shape.n_ff)) == 1 and not shape.n_expert:
            break  # every layer is the same
    output_buffer = shape.n_vocab * F32  # the logits of the last token, kept between calls
    return max(output_stage, layer_stage) + output_buffer
