"""A repo's `.gguf` files grouped into variants, each one model: a single file, or every part of one split set.

Files are grouped by folder, split stem and part count. Unrelated files that share a quantization
(`llama-7b.Q4_K_M.gguf`, `llama-13b.Q4_K_M.gguf`) are therefore separate variants, and so are split sets
of different part counts. Each variant gets a label that is unique in the repo and that
`POST /local/download {"quantization": label}` takes:

1. its quantization (`Q4_K_M`), or for a file with no known quantization its name without `.gguf`;
2. when several variants share that, the quantization plus what tells them apart: `Q4_K_M (llama-13b)`,
   then `Q8_0 (M, 3 parts)`;
3. when that still clashes, or grows past VARIANT_LABEL_MAX_LENGTH, the path of its (first) file.

Files the download endpoint would refuse (`downloads.filenames.filename_problem`) and split sets with a
part missing are never offered; they are listed in `RepoFiles.left_out`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from model_manager.core.errors import AmbiguousVariantError
from model_manager.core.gguf_format import is_gguf_filename, is_mmproj, parse_split_name, quantization_from_filename
from model_manager.core.models import VARIANT_LABEL_MAX_LENGTH, ProjectorFile, QuantVariant
from model_manager.core.services.downloads.filenames import filename_problem

_SEPARATORS = " -._"


@dataclass(frozen=True)
class RepoFiles:
    """The GGUF content of one repo: its variants (smallest first), its multimodal projector files, and
    the `.gguf` files left out because no download could take them (bad names, incomplete split sets)."""

    variants: list[QuantVariant]
    mmproj_files: list[str]
    left_out: list[str] = field(default_factory=list)
    # label -> the quantization it starts from ("Q4_K_M (llama-13b)" -> "Q4_K_M"), for requests made before labels
    # were disambiguated.
    quantization_of: dict[str, str] = field(default_factory=dict)
    projectors: list[ProjectorFile] = field(default_factory=list)  # `mmproj_files` with their sizes

    def matching(self, quantization: str) -> list[QuantVariant]:
        """The variants `quantization` may mean: the one with exactly that label; else those whose label
        matches ignoring case; else those whose quantization it names (`Q4_K_M` for `Q4_K_M (llama-13b)`)."""
        exact = [v for v in self.variants if v.quantization == quantization]
        if exact:
            return exact
        wanted = quantization.casefold()
        same_label = [v for v in self.variants if v.quantization.casefold() == wanted]
        if same_label:
            return same_label
        return [v for v in self.variants if self.quantization_of.get(v.quantization, "").casefold() == wanted]

    def variant(self, quantization: str) -> QuantVariant | None:
        """The one variant `quantization` means, None if none. Raises AmbiguousVariantError if it means several."""
        found = self.matching(quantization)
        if len(found) > 1:
            raise ambiguous(quantization, found)
        return found[0] if found else None


def ambiguous(quantization: str, candidates: list[QuantVariant], where: str = "the repo") -> AmbiguousVariantError:
    """The error for a quantization that names several variants; its details list every candidate."""
    labels = ", ".join(repr(v.quantization) for v in candidates)
    return AmbiguousVariantError(
        f"{quantization!r} matches {len(candidates)} variants of {where}: {labels}; ask for one by its label",
        details={"quantization": quantization, "candidates": [v.model_dump() for v in candidates]},
    )


@dataclass
class _FileSet:
    """The files of one variant: a single file, or the parts of one split set (index -> (path, size))."""

    folder: str
    stem: str  # the file's name without `.gguf`, or the split stem; no folder
    count: int
    parts: dict[int, tuple[str, int | None]] = field(default_factory=dict)
    broken: bool = False  # two files claim the same part

    @property
    def complete(self) -> bool:
        return not self.broken and sorted(self.parts) == list(range(1, self.count + 1))

    @property
    def files(self) -> list[str]:
        return [self.parts[index][0] for index in sorted(self.parts)]

    @property
    def quantization(self) -> str | None:
        # The first file's whole path: a folder such as `Q8_0/` may be what names it.
        return quantization_from_filename(self.files[0])

    def qualifier(self) -> str:
        """What tells this set apart from others of the same quantization: folder and stem, without the label."""
        stem = self.stem
        label = self.quantization
        if label is not None:
            pattern = rf"[{re.escape(_SEPARATORS)}]?(?<![a-z0-9]){re.escape(label)}(?![a-z0-9])"
            stem = re.sub(pattern, "", stem, flags=re.IGNORECASE).strip(_SEPARATORS) or self.stem
        return f"{self.folder}/{stem}" if self.folder else stem


def group_variants(files: Iterable[tuple[str, int | None]]) -> RepoFiles:
    """Group `(filename, size)` pairs into variants. Files that are not GGUF are ignored."""
    sets: dict[tuple[str, str, int], _FileSet] = {}
    projectors: dict[str, int | None] = {}
    left_out: list[str] = []
    for filename, size in files:
        if not is_gguf_filename(filename):
            continue
        if filename_problem(filename) is not None:
            left_out.append(filename)
            continue
        if is_mmproj(filename):
            projectors[filename] = size
            continue
        folder, _, name = filename.rpartition("/")
        split = parse_split_name(name)
        stem, index, count = (split.stem, split.index, split.count) if split else (name[: -len(".gguf")], 1, 1)
        file_set = sets.setdefault((folder, stem, count), _FileSet(folder, stem, count))
        file_set.broken |= index in file_set.parts
        file_set.parts[index] = (filename, size)

    complete = [s for s in sets.values() if s.complete]
    left_out += [name for s in sets.values() if not s.complete for name in s.files]
    labels = _labels(complete)
    variants = [
        QuantVariant(
            quantization=label,
            files=file_set.files,
            size_bytes=sum(size or 0 for _, size in file_set.parts.values()),
        )
        for file_set, label in zip(complete, labels)
    ]
    variants.sort(key=lambda v: (v.size_bytes, v.quantization))
    quantization_of = {
        label: file_set.quantization or file_set.stem for file_set, label in zip(complete, labels)
    }
    return RepoFiles(
        variants=variants,
        mmproj_files=sorted(projectors),
        left_out=sorted(left_out),
        quantization_of=quantization_of,
        projectors=[ProjectorFile(filename=name, size_bytes=projectors[name]) for name in sorted(projectors)],
    )


def _labels(sets: list[_FileSet]) -> list[str]:
    """One label per set, unique, each at most VARIANT_LABEL_MAX_LENGTH characters (see the module's docstring)."""
    bases = [s.quantization or s.stem for s in sets]
    shared = Counter(bases)
    labels = []
    for file_set, base in zip(sets, bases):
        if shared[base] == 1:
            labels.append(base)
        elif file_set.quantization is None:  # a name with no quantization in it: its path tells it apart
            labels.append(file_set.files[0])
        else:
            labels.append(f"{base} ({file_set.qualifier()})")
    clashes = Counter(labels)
    for position, file_set in enumerate(sets):
        if clashes[labels[position]] > 1 and file_set.quantization is not None:
            size = f"{file_set.count} parts" if file_set.count > 1 else "1 file"
            labels[position] = f"{bases[position]} ({file_set.qualifier()}, {size})"
    # Paths are unique in a repo: a label that still clashes (or is too long) becomes its first file's path.
    # Twice, since a path may equal another set's label; then each of the two holds its own path.
    for _ in range(2):
        clashes = Counter(labels)
        labels = [
            label if clashes[label] == 1 and len(label) <= VARIANT_LABEL_MAX_LENGTH else file_set.files[0]
            for file_set, label in zip(sets, labels)
        ]
    return labels
