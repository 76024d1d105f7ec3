"""Will it run here? The memory a GGUF model needs and where it fits, from its header alone.

`estimate(headers, context, target)` is the one entry point: headers of the model's file (all split
parts), optionally a projector's header, a context length and the machine (`Target`).
"""

from __future__ import annotations

from model_manager.core.fit.kv_cache import CACHE_TYPES, DEFAULT_UBATCH
from model_manager.core.fit.placement import FitResult, Memory, Target, place
from model_manager.core.fit.quant_quality import QUALITY_ORDER, quality_rank
from model_manager.core.fit.shape import ModelShape, ShapeError, model_shape
from model_manager.core.gguf_format import GGUFHeader

DEFAULT_CONTEXT = 8192

__all__ = [
    "CACHE_TYPES", "DEFAULT_CONTEXT", "FitResult", "Memory", "ModelShape", "QUALITY_ORDER", "ShapeError", "Target",
    "default_context", "estimate", "model_shape", "quality_rank",
]


def default_context(shape: ModelShape) -> int:
    """The context used when none is asked for: 8192 tokens, or less if the model was trained on less."""
    return min(DEFAULT_CONTEXT, shape.context_length or DEFAULT_CONTEXT)


def estimate(
    headers: list[GGUFHeader],
    target: Target,
    context: int | None = None,
    *,
    projector: GGUFHeader | None = None,
    cache_type: str = "f16",
    ubatch: int = DEFAULT_UBATCH,
) -> FitResult:
    """Where the model with these headers (first split part first, tensor infos kept) runs on `target`.

    Raises `ShapeError` when the header lacks what the estimate needs, `ValueError` for a bad
    context or cache type.
    """
    shape = model_shape(headers, projector)
    return place(shape, context or default_context(shape), target, cache_type, ubatch)
