"""What the finders report: a model another tool holds (not checked yet), and entries skipped with a reason.

Blocking: the helpers here touch the disk; call them from a worker thread.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_manager.core.gguf_format import is_gguf_filename, is_mmproj, parse_split_name


@dataclass
class Candidate:
    """A model as a tool's layout shows it, before its files are checked.

    `paths` are its file, or every part of a split model in order, spelled as the tool spells them (an HF
    snapshot path, not the blob it links to). `sha256` is set only when the layout names the bytes' SHA-256
    (an Ollama blob, an HF LFS blob). `library_name` is the `.gguf` name the file would get in the library.
    """

    tool: str
    name: str
    paths: list[Path]
    library_name: str
    repo_id: str | None = None
    projector: Path | None = None
    sha256: str | None = None
    quantization_hint: str | None = None  # text that may name the quantization (an Ollama or llama.cpp tag)
    display_name: str | None = None


@dataclass(frozen=True)
class Skipped:
    """Something a finder could not use, and why, in the user's words."""

    tool: str
    path: str
    reason: str


@dataclass
class Findings:
    """What one or more finders found: candidate models, and what they skipped."""

    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def skip(self, tool: str, path: str | Path, reason: str) -> None:
        self.skipped.append(Skipped(tool, str(path), reason))


def read_folder(folder: Path, tool: str, findings: Findings) -> list[os.DirEntry] | None:
    """The entries of `folder`, sorted by name; None, with the folder skipped and why, when it cannot be read."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as error:
        findings.skip(tool, folder, f"cannot read this folder: {error.strerror or error}")
        return None


def is_folder_path(path: Path, tool: str, findings: Findings) -> bool:
    """Whether `path` is a folder; a path that exists but cannot be looked at is skipped with the reason."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as error:
        findings.skip(tool, path, f"cannot reach this folder: {error.strerror or error}")
        return False


def is_folder(entry: os.DirEntry) -> bool:
    """Whether the entry is a folder (a symlink to one counts); False when it cannot be told."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def gguf_entries(entries: list[os.DirEntry]) -> list[Path]:
    """The `.gguf` files (or links, dangling ones too) among `entries`, hidden ones left out."""
    return [Path(e.path) for e in entries if is_gguf_filename(e.name) and not e.name.startswith(".") and not is_folder(e)]


@dataclass
class FolderModels:
    """The GGUF files of one folder sorted into models (split sets grouped, in order) and projectors."""

    models: list[list[Path]] = field(default_factory=list)
    projectors: list[Path] = field(default_factory=list)


def group_models(paths: list[Path], tool: str, findings: Findings) -> FolderModels:
    """Sort the GGUF files of one folder: each projector (`mmproj`) apart, each plain file a model, each
    complete split set one model; an incomplete split set is skipped with the parts it lacks."""
    result = FolderModels()
    sets: dict[tuple[str, int], dict[int, Path]] = {}
    for path in paths:
        if is_mmproj(path.name):
            result.projectors.append(path)
            continue
        split = parse_split_name(path.name)
        if split is None:
            result.models.append([path])
        else:
            sets.setdefault((split.stem, split.count), {})[split.index] = path
    for (_stem, count), parts in sorted(sets.items()):
        missing = [index for index in range(1, count + 1) if index not in parts]
        if missing:
            first = parts[min(parts)]
            findings.skip(tool, first, f"split model with parts {missing} of {count} missing")
        else:
            result.models.append([parts[index] for index in range(1, count + 1)])
    return result


def pick_projector(projectors: list[Path]) -> Path | None:
    """The projector a folder's models use: the only one there, or the first by name when there are several."""
    return sorted(projectors)[0] if projectors else None


Describe = Callable[[list[Path]], dict[str, Any]]  # a model's files -> its name, repo_id, ... in that tool


def add_folder_models(folder: Path, tool: str, findings: Findings, describe: Describe) -> list[os.DirEntry] | None:
    """Add a candidate for each model in `folder` (files named by themselves, the folder's projector beside),
    with what `describe(paths)` says about it. Returns the folder's entries; None when it cannot be read."""
    entries = read_folder(folder, tool, findings)
    if entries is None:
        return None
    grouped = group_models(gguf_entries(entries), tool, findings)
    projector = pick_projector(grouped.projectors)
    for paths in grouped.models:
        findings.candidates.append(
            Candidate(tool=tool, paths=paths, library_name=paths[0].name, projector=projector, **describe(paths))
        )
    return entries


def add_models_below(
    root: Path, tool: str, findings: Findings, describe: Describe, *, max_depth: int, excluded: Collection[str] = ()
) -> None:
    """`add_folder_models` for `root` and its folders down to `max_depth`, in name order. Hidden folders, links
    to folders (a link loop must not hang discovery) and the real paths in `excluded` are not entered."""
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        if os.path.realpath(folder) in excluded:
            continue
        entries = add_folder_models(folder, tool, findings, describe)
        if entries and depth < max_depth:
            subfolders = [e for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
            stack.extend((Path(e.path), depth + 1) for e in reversed(subfolders))
