"""`/local/storage/...`: disk usage of the library, and cleanup of what nothing owns."""

from __future__ import annotations

import inspect
from typing import Annotated

from fastapi import APIRouter, Query

from model_manager.app.deps import DownloadsDep, LocalStorageDep
from model_manager.app.openapi_errors import error_responses
from model_manager.core.models import CleanupResult, RescanResult, StorageStats

router = APIRouter(prefix="/local/storage", tags=["storage"])


@router.get("/stats", response_model=StorageStats)
async def storage_stats(storage: LocalStorageDep) -> StorageStats:
    return await storage.storage_stats()


@router.post("/cleanup", response_model=CleanupResult, responses=error_responses(422))
async def cleanup_storage(
    storage: LocalStorageDep,
    downloads: DownloadsDep,
    dry_run: Annotated[bool, Query(description="List what would be removed, remove nothing")] = False,
) -> CleanupResult:
    active_ids = getattr(downloads, "active_ids", None)
    active = active_ids() if callable(active_ids) else ()
    if inspect.isawaitable(active):
        active = await active
    return await storage.cleanup(dry_run=dry_run, active_download_ids=set(active))


@router.post("/rescan", response_model=RescanResult, responses=error_responses(422))
async def rescan_storage(
    storage: LocalStorageDep,
    dry_run: Annotated[bool, Query(description="List the models that would be registered, register nothing")] = False,
) -> RescanResult:
    """Register, where they lie, the valid GGUF models in MODELS_DIR that the library does not know yet."""
    return await storage.rescan(dry_run=dry_run)
