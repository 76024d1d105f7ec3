"""The one quality order of quantization labels, best first, following llama.cpp's quant types.

A variant "better" than another keeps more of the original weights: more bits per weight, and among
the same bits the newer k-quant or i-quant schemes ahead of the legacy ones.
"""

from __future__ import annotations

# Best first. Labels are spelled as model_manager.core.gguf_format.QUANTIZATION_LABELS spells them.
QUALITY_ORDER: tuple[str, ...] = (
    "F32", "BF16", "F16",
    "Q8_K_XL", "Q8_0",
    "Q6_K_XL", "Q6_K_L", "Q6_K",
    "Q5_K_XL", "Q5_K_L", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0",
    "Q4_K_XL", "Q4_K_L", "Q4_K_M", "Q4_K_S", "IQ4_NL", "IQ4_XS", "Q4_1", "Q4_0",
    "Q4_0_8_8", "Q4_0_4_8", "Q4_0_4_4", "MXFP4", "NVFP4",
    "Q3_K_XL", "Q3_K_L", "Q3_K_M", "IQ3_M", "IQ3_S", "Q3_K_S", "IQ3_XS", "IQ3_XXS",
    "Q2_K_XL", "Q2_K_L", "Q2_K", "Q2_K_S", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS",
    "TQ2_0", "TQ1_0", "IQ1_M", "IQ1_S", "Q1_0",
)
_RANK = {label: index for index, label in enumerate(QUALITY_ORDER)}


def quality_rank(label: str | None) -> int:
    """The label's place in `QUALITY_ORDER` (0 is the best); unknown labels and None rank last."""
    if label is None:
        return len(QUALITY_ORDER)
    return _RANK.get(label.upper(), len(QUALITY_ORDER))
