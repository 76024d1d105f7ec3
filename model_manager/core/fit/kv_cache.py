"""The KV cache a context needs, layer by layer, as llama.cpp allocates it (llama-kv-cache*.cpp)."""

from __future__ import annotations

from model_manager.core.fit.shape import ModelShape

DEFAULT_UBATCH = 512
CELL_PADDING = 256  # llama.cpp rounds the cache's cell count up to this

# Bytes per value of each cache type: f16 is 2; q8_0 stores 32 values in 34 bytes, q4_0 in 18.
CACHE_TYPES: dict[str, float] = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def _pad(n: int, to: int = CELL_PADDING) -> int:
    return -(-n // to) * to


def padded_context(context: int) -> int:
    """The cell count llama.cpp gives a context of `context` tokens."""
    return _pad(max(context, 1))


def layer_cells(shape: ModelShape, layer: int, context: int, ubatch: int = DEFAULT_UBATCH) -> int:
    """Cells layer `layer` holds: the whole context, or for a sliding-window layer min(ctx, window + ubatch)."""
    cells = padded_context(context)
    if shape.swa_layers[layer] and shape.sliding_window:
        return min(cells, _pad(shape.sliding_window + ubatch))
    return cells


def kv_cache_per_layer(
    shape: ModelShape, context: int, cache_type: str = "f16", ubatch: int = DEFAULT_UBATCH
) -> list[int]:
    """Bytes of KV cache (or recurrent state) of each layer for one sequence of `context` tokens.

    Raises `ValueError` for a cache type other than f32, f16, bf16, q8_0 and q4_0.
    """
    try:
        value_bytes = CACHE_TYPES[cache_type.lower()]
    except KeyError:
        raise ValueError(f"unknown KV cache type {cache_type!r}; use one of {', '.join(CACHE_TYPES)}") from None
    sizes = []
    for layer in range(shape.n_layer):
        heads = shape.n_head_kv[layer]
        if heads == 0:  # a recurrent layer keeps its state, whatever the context
            sizes.append(shape.recurrent_state_bytes)
            continue
        per_cell = heads * (shape.key_length + (0 if shape.mla else shape.value_length))
        sizes.append(int(layer_cells(shape, layer, context, ubatch) * per_cell * value_bytes))
    return sizes


def kv_cache_bytes(shape: ModelShape, context: int, cache_type: str = "f16", ubatch: int = DEFAULT_UBATCH) -> int:
    """Total KV cache bytes for one sequence of `context` tokens (see `kv_cache_per_layer`)."""
    return sum(kv_cache_per_layer(shape, context, cache_type, ubatch))
