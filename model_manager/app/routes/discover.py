"""`/local/discover` (+): the GGUF models other tools keep on this machine, and importing them in one call."""

from __future__ import annotations

from fastapi import APIRouter

from model_manager.app.deps import DiscoveryDep
from model_manager.app.openapi_errors import error_responses
from model_manager.core.models import DiscoverImportRequest, DiscoverImportResult, DiscoverResult

router = APIRouter(prefix="/local", tags=["discover"])


@router.get("/discover", response_model=DiscoverResult)
async def discover_models(discovery: DiscoveryDep) -> DiscoverResult:
    """Models found in Ollama's store, LM Studio's folder, the Hugging Face cache, llama.cpp's cache and
    LIBRARY_SCAN_DIRS, with whether the library holds each; what could not be read is listed in `skipped`."""
    return await discovery.discover()


@router.post("/discover/import", response_model=DiscoverImportResult, responses=error_responses(400, 413, 422))
async def import_discovered(discovery: DiscoveryDep, body: DiscoverImportRequest) -> DiscoverImportResult:
    """Import listed models by their `path` (`link` by default: no copy). One result per path, in order:
    imported, already in the library, or failed with the error code and message of that model's import."""
    return await discovery.import_found(body.paths, body.action)
