"""Catalogue rows as the API shows them: conversion to `LocalModel`, search and sort."""

from __future__ import annotations

from pathlib import Path

from model_manager.core.catalogue import ModelRecord
from model_manager.core.models import LocalModel, LocalModelSort


def to_api(record: ModelRecord) -> LocalModel:
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
    )


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
