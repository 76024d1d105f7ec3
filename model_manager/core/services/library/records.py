"""Catalogue rows as the API shows them: conversion to `LocalModel`, search and sort."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path

from model_manager.core.catalogue import Catalogue, ExportRecord, ModelRecord
from model_manager.core.models import LocalModel, LocalModelSort, ModelExport


def to_api_export(export: ExportRecord) -> ModelExport:
    details = dict(export.details)
    method = details.pop("method", "hardlink")
    notes = details.pop("notes", [])
    return ModelExport(
        target=export.target, name=export.name, method=method, created_paths=export.created_paths,
        details=details, notes=notes, created_at=export.created_at,
    )


def to_api(
    record: ModelRecord,
    exports: Iterable[ExportRecord] = (),
    run_context: int | None = None,
    projector: ModelRecord | None = None,
) -> LocalModel:
    """The model as the API shows it, with its exports and ready-to-paste run commands (llama.cpp's with
    `run_context`, a context known to fit, when given, and with `projector`, its projector model)."""
    exports = list(exports)
    return LocalModel(
        model_id=record.model_id,
        original_repo_id=record.original_repo_id,
        display_name=record.display_name,
        file_path=record.file_path,
        file_size_bytes=record.file_size_bytes,
        file_hash=record.file_hash,
        imported_at=record.imported_at,
        last_accessed=record.last_accessed,
        metadata=record.metadata,
        is_downloaded=record.is_downloaded,
        external=record.external,
        projector_model_id=projector.model_id if projector is not None else None,
        exports=[to_api_export(export) for export in exports],
        run=run_hints(record, exports, run_context, projector),
    )


def projector_of(record: ModelRecord, models: Iterable[ModelRecord]) -> ModelRecord | None:
    """The ready single-file model among `models` holding `record`'s projector, or None (none linked, or gone).

    A download links a model to its projector by the projector's SHA-256 (`metadata["projector_sha256"]`), so
    the link holds whichever of the two arrives first, and comes back when a deleted projector is fetched again.
    """
    wanted = record.metadata.get("projector_sha256")
    if not wanted:
        return None
    return next(
        (m for m in models if m.file_hash == wanted and m.state == "ready" and not m.part_paths and m is not record),
        None,
    )


def find_projector(catalogue: Catalogue, record: ModelRecord) -> ModelRecord | None:
    """`projector_of` looked up in the catalogue (blocking)."""
    wanted = record.metadata.get("projector_sha256")
    found = catalogue.find_model_by_hash(wanted) if wanted else None
    return projector_of(record, [found] if found is not None else [])


DEFAULT_RUN_CONTEXT = 8192  # what `-c` the llama.cpp hint asks for, at most the model's own context


def run_hints(
    record: ModelRecord, exports: list[ExportRecord], context: int | None = None, projector: ModelRecord | None = None
) -> dict[str, str]:
    """Commands that run the model: llama.cpp on our file (with its projector), and the command of each export's tool."""
    trained = record.metadata.get("context_length")
    if context is None:
        context = min(trained, DEFAULT_RUN_CONTEXT) if isinstance(trained, int) and trained > 0 else 4096
    mmproj = f" --mmproj {shlex.quote(projector.file_path)}" if projector is not None else ""
    hints = {"llama.cpp": f"llama-server -m {shlex.quote(record.file_path)}{mmproj} -c {context}"}
    for export in exports:
        command = export.details.get("run") or export.details.get("load")
        if command:
            hints[export.target] = command
    return hints


def matches(model: LocalModel, needle: str) -> bool:
    haystack = (model.display_name, model.original_repo_id or "", Path(model.file_path).name, model.metadata.get("name") or "")
    return any(needle in text.casefold() for text in haystack)


def sort_models(models: list[LocalModel], sort: LocalModelSort) -> list[LocalModel]:
    if sort is LocalModelSort.name:
        return sorted(models, key=lambda m: (m.display_name.casefold(), m.model_id))
    if sort is LocalModelSort.size:
        return sorted(models, key=lambda m: -m.file_size_bytes)
    if sort is LocalModelSort.last_accessed:
        never = [m for m in models if m.last_accessed is None]
        seen = sorted((m for m in models if m.last_accessed is not None), key=lambda m: m.last_accessed, reverse=True)
        return seen + never
    return models  # imported: the catalogue's order, oldest first
