"""Checking what a finder found: every file there and a valid GGUF (header only), and how it stands with the library.

Blocking: call from a worker thread.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from model_manager.core.gguf_format import (
    GGUFFormatError,
    quantization_from_file_type,
    quantization_from_filename,
    read_gguf_header,
)
from model_manager.core.models import DiscoveredModel
from model_manager.core.services import disk
from model_manager.core.services.discovery.found import Candidate, Skipped
from model_manager.core.services.library.ownership import Ownership


@dataclass(frozen=True)
class LibraryView:
    """What a check compares a candidate with: the library's files and hashes, MODELS_DIR, the import folders."""

    ownership: Ownership
    models_dir: Path
    import_allowed_dirs: tuple[str, ...]  # real paths


def check(candidate: Candidate, library: LibraryView) -> DiscoveredModel | Skipped:
    """The model as discover lists it, or why it is skipped (a missing or dangling file, a bad header)."""
    infos: list[os.stat_result] = []
    header = None
    for index, path in enumerate(candidate.paths):
        problem = file_problem(path)
        if problem is None:
            try:
                part_header = read_gguf_header(path)
            except GGUFFormatError as error:
                problem = error.message
            except OSError as error:
                problem = f"cannot read it: {error.strerror or error}"
            else:
                header = header or part_header
        if problem is not None:
            if index > 0:
                problem = f"part {index + 1} of {len(candidate.paths)} of {candidate.paths[0].name}: {problem}"
            return Skipped(candidate.tool, str(path), problem)
        infos.append(os.stat(path))
    assert header is not None
    first = candidate.paths[0]
    real = os.path.realpath(first)
    model_id = _library_model(infos[0], candidate.sha256, library.ownership)
    metadata = header.metadata
    file_type = metadata.get("general.file_type")
    architecture = metadata.get("general.architecture")
    return DiscoveredModel(
        tool=candidate.tool,
        name=candidate.name,
        path=str(first),
        part_paths=[str(path) for path in candidate.paths],
        size_bytes=sum(info.st_size for info in infos),
        repo_id=candidate.repo_id,
        quantization=quantization_from_file_type(file_type if isinstance(file_type, int) else None)
        or quantization_from_filename(candidate.quantization_hint or candidate.library_name),
        architecture=architecture if isinstance(architecture, str) else None,
        projector_path=str(candidate.projector) if candidate.projector and _is_gguf(candidate.projector) else None,
        sha256=candidate.sha256,
        in_library=model_id is not None,
        library_model_id=model_id,
        zero_copy=disk.same_filesystem(Path(real), library.models_dir),
        import_blocked=None if model_id else _import_blocked(candidate, library),
    )


def file_problem(path: Path) -> str | None:
    """Why `path` is not a file to read (missing, a dangling link, not a regular file), or None."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"dangling symbolic link: its target {os.readlink(path)} does not exist"
        return "the file is missing"
    except OSError as error:
        return f"cannot reach it: {error.strerror or error}"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    return None


def _is_gguf(path: Path) -> bool:
    try:
        read_gguf_header(path, read_tensor_info=False)
    except (GGUFFormatError, OSError):
        return False
    return True


def _library_model(info: os.stat_result, sha256: str | None, ownership: Ownership) -> str | None:
    """The id of the library model holding this very file (any link to it) or, when named, these bytes."""
    owned = ownership.by_identity.get((info.st_dev, info.st_ino))
    if owned is not None:
        return owned.record.model_id
    record = ownership.model_with_bytes(sha256) if sha256 else None
    return record.model_id if record is not None else None


def _import_blocked(candidate: Candidate, library: LibraryView) -> str | None:
    """Why the library's import would refuse the model's files (as `POST /local/import` checks them), or None."""
    for path in candidate.paths:
        real = os.path.realpath(path)
        if not any(os.path.commonpath([real, folder]) == folder for folder in library.import_allowed_dirs):
            return f"{real} is outside IMPORT_ALLOWED_DIRS; add its folder there to import it"
    return None
