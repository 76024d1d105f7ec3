"""Which multimodal projector (`mmproj`) file of a repo goes with a variant.

A vision model needs its projector beside its weights (llama.cpp's `--mmproj`). The rule, in order:

1. the repo has one projector: that one;
2. several: those in the variant's folder when there are any (else all of them), and of those the
   first of F16, BF16, Q8_0 (the projector's own quantization, from its name); else the first by name.

A projector is small next to the model, so the least quantized one is preferred: it costs little and
keeps image quality.
"""

from __future__ import annotations

from model_manager.core.gguf_format import quantization_from_filename

PREFERRED_QUANTIZATIONS = ("F16", "BF16", "Q8_0")


def matching_projector(projectors: list[str], variant_files: list[str]) -> str | None:
    """The projector (a repo path from `projectors`) that goes with the variant made of `variant_files`, or None."""
    if len(projectors) <= 1:
        return projectors[0] if projectors else None
    folder = _folder(variant_files[0]) if variant_files else ""
    candidates = sorted(name for name in projectors if _folder(name) == folder) or sorted(projectors)
    for wanted in PREFERRED_QUANTIZATIONS:
        found = [name for name in candidates if quantization_from_filename(name.rpartition("/")[2]) == wanted]
        if found:
            return found[0]
    return candidates[0]


def _folder(path: str) -> str:
    return path.rpartition("/")[0]
