"""A repo's `.gguf` files grouped into quantization variants: split parts together and in order, projectors apart."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from model_manager.core.gguf_format import is_gguf_filename, is_mmproj, parse_split_name, quantization_from_filename
from model_manager.core.models import QuantVariant


@dataclass(frozen=True)
class RepoFiles:
    """The GGUF content of one repo: its model variants, smallest first, and its multimodal projector files."""

    variants: list[QuantVariant]
    mmproj_files: list[str]

    def variant(self, quantization: str) -> QuantVariant | None:
        wanted = quantization.casefold()
        return next((v for v in self.variants if v.quantization.casefold() == wanted), None)


def variant_label(filename: str) -> str:
    """The variant a `.gguf` file belongs to: its quantization label, else its name without split suffix and `.gguf`."""
    label = quantization_from_filename(filename)
    if label is not None:
        return label
    split = parse_split_name(filename)
    stem = split.stem if split is not None else filename[: -len(".gguf")]
    return stem.replace("\\", "/").rsplit("/", 1)[-1]


def _part_order(filename: str) -> tuple[str, int]:
    split = parse_split_name(filename)
    return (split.stem, split.index) if split is not None else (filename, 0)


def group_variants(files: Iterable[tuple[str, int | None]]) -> RepoFiles:
    """Group `(filename, size)` pairs into variants. Files that are not GGUF are ignored."""
    by_label: dict[str, list[tuple[str, int | None]]] = {}
    projectors: list[str] = []
    for filename, size in files:
        if not is_gguf_filename(filename):
            continue
        if is_mmproj(filename):
            projectors.append(filename)
            continue
        by_label.setdefault(variant_label(filename), []).append((filename, size))
    variants = [
        QuantVariant(
            quantization=label,
            files=[name for name, _ in sorted(members, key=lambda member: _part_order(member[0]))],
            size_bytes=sum(size or 0 for _, size in members),
        )
        for label, members in by_label.items()
    ]
    variants.sort(key=lambda v: (v.size_bytes, v.quantization))
    return RepoFiles(variants=variants, mmproj_files=sorted(projectors))
