"""`/system/hardware` (+): this machine's CPU, RAM and GPUs, and the target the fit endpoints use."""

from __future__ import annotations

from fastapi import APIRouter

from model_manager.app.routes.fit import FitDep
from model_manager.core.models import HardwareInfo

router = APIRouter(prefix="/system", tags=["system"])


@router.get("/hardware", response_model=HardwareInfo)
async def hardware(fit: FitDep) -> HardwareInfo:
    return await fit.hardware()
