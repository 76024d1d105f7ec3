"""`GET /health`: the one endpoint that needs no token."""

from __future__ import annotations

from fastapi import APIRouter

from model_manager import __version__
from model_manager.core.catalogue import utc_now
from model_manager.core.models import HealthResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    return HealthResponse(status="healthy", timestamp=utc_now(), version=__version__)
