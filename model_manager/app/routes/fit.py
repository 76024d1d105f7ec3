"""Fit endpoints (+): will a model run on the target machine? For a Hub variant and for a library model.

`gguf-providers?fit=true` (routes/hub.py) uses the same query parameters, declared here once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from model_manager.app.openapi_errors import error_responses
from model_manager.core.fit.service import MAX_CONTEXT, FitService
from model_manager.core.models import LocalModelFit, VariantFit

router = APIRouter(tags=["fit"])


def get_fit(request: Request) -> FitService:
    return request.app.state.fit


FitDep = Annotated[FitService, Depends(get_fit)]
ContextQuery = Annotated[
    int | None, Query(ge=1, le=MAX_CONTEXT, description="Context length in tokens (default: 8192, or the model's own if less)")
]
RamQuery = Annotated[float | None, Query(ge=0, le=65536, description="GiB of RAM of the target (default: FIT_RAM_GB, else detected)")]
VramQuery = Annotated[
    float | None, Query(ge=0, le=65536, description="GiB of free GPU memory of the target; 0: no GPU (default: FIT_VRAM_GB, else detected)")
]


# `quantization` and `filename` as the document shows them: one exploded query object that needs at least one
# of the two (OpenAPI has no other way to tie two query parameters); the service answers 422 without either.
_VARIANT_PARAMETER = {
    "name": "variant",
    "in": "query",
    "required": True,
    "style": "form",
    "explode": True,
    "description": "`quantization` (a variant's label) or `filename` (one of its files); `filename` wins when both",
    "schema": {
        "type": "object",
        "properties": {
            "quantization": {"type": "string", "minLength": 1, "maxLength": 1000},
            "filename": {"type": "string", "minLength": 1, "maxLength": 1000},
        },
        "anyOf": [{"required": ["quantization"]}, {"required": ["filename"]}],
    },
}


@router.get(
    "/hub/fit",
    response_model=VariantFit,
    responses=error_responses(400, 403, 404, 409, 422, 429, 502),
    openapi_extra={"parameters": [_VARIANT_PARAMETER]},
)
async def hub_variant_fit(
    fit: FitDep,
    repo_id: Annotated[str, Query(min_length=3, max_length=200, pattern=r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")],
    quantization: Annotated[str | None, Query(min_length=1, max_length=1000, include_in_schema=False)] = None,
    filename: Annotated[str | None, Query(min_length=1, max_length=1000, include_in_schema=False)] = None,
    context: ContextQuery = None,
    ram_gb: RamQuery = None,
    vram_gb: VramQuery = None,
    projector: Annotated[
        str | None, Query(min_length=1, max_length=1000, description="(+) An mmproj file of the repo to count too")
    ] = None,
) -> VariantFit:
    """The fit of one variant (by `quantization` label or `filename`), from its header read before download."""
    return await fit.fit_hub(
        repo_id, quantization=quantization, filename=filename, context=context, ram_gb=ram_gb, vram_gb=vram_gb,
        projector=projector,
    )


@router.get(
    "/local/models/{model_id}/fit", response_model=LocalModelFit, responses=error_responses(400, 404, 409, 422)
)
async def local_model_fit(
    fit: FitDep, model_id: str, context: ContextQuery = None, ram_gb: RamQuery = None, vram_gb: VramQuery = None
) -> LocalModelFit:
    return await fit.fit_local(model_id, context, ram_gb=ram_gb, vram_gb=vram_gb)
