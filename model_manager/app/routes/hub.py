"""`/hub/...`: search the Hugging Face Hub, a model's details, and the repos offering it as GGUF."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import ValidationError

from model_manager.app.deps import HubDep
from model_manager.app.openapi_errors import error_responses
from model_manager.app.routes.fit import ContextQuery, FitDep, RamQuery, VramQuery
from model_manager.core.errors import InvalidFiltersError
from model_manager.core.models import GGUFProvider, HubSort, ModelInfoDetailed, ModelInfoShort, SearchFilters

router = APIRouter(prefix="/hub", tags=["hub"])

# Every Hub call can meet the Hub's rate limit or find it unreachable; a repo can be missing or gated.
_HUB_ERRORS = (429, 502)
_REPO_ERRORS = (403, 404, *_HUB_ERRORS)

# `filters_json` as the document shows it: a JSON-encoded SearchFilters object (parsed by `parse_filters`).
_FILTERS_PARAMETER = {
    "name": "filters_json",
    "in": "query",
    "required": False,
    "description": "A JSON object of filters; unknown keys, bad JSON or bad values are 400 INVALID_FILTERS",
    "content": {"application/json": {"schema": SearchFilters.model_json_schema()}},
}


def parse_filters(filters_json: str | None) -> SearchFilters:
    """The `filters_json` query value as SearchFilters; `InvalidFiltersError` for bad JSON, a non-object or a bad field."""
    if filters_json is None or not filters_json.strip():
        return SearchFilters()
    try:
        raw = json.loads(filters_json)
    except json.JSONDecodeError as exc:
        raise InvalidFiltersError(f"filters_json is not valid JSON: {exc.msg} at position {exc.pos}") from exc
    if not isinstance(raw, dict):
        raise InvalidFiltersError("filters_json must be a JSON object, such as {\"task\": \"text-generation\"}")
    try:
        return SearchFilters.model_validate(raw)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in error["loc"]), "message": error["msg"]}
            for error in exc.errors(include_input=False, include_url=False)
        ]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise InvalidFiltersError(f"filters_json is not valid: {summary}", details={"errors": problems}) from exc


def parse_sort(sort: str) -> HubSort:
    """API.md: an unknown enum value is a 400 `INVALID_FILTERS`, like a bad filter."""
    try:
        return HubSort(sort)
    except ValueError:
        choices = ", ".join(member.value for member in HubSort)
        raise InvalidFiltersError(f"unknown sort {sort!r}; use one of: {choices}") from None


@router.get(
    "/search",
    response_model=list[ModelInfoShort],
    responses=error_responses(400, 422, *_HUB_ERRORS),
    openapi_extra={"parameters": [_FILTERS_PARAMETER]},
)
async def search_models(
    hub: HubDep,
    query: Annotated[str | None, Query(max_length=200, description="Words in the repo id; empty lists all")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
    sort: Annotated[
        str,
        # An enum in the document; checked by `parse_sort` so that an unknown value is 400 INVALID_FILTERS.
        Query(description="The order", json_schema_extra={"enum": [member.value for member in HubSort]}),
    ] = HubSort.likes.value,
    # Bounded by SearchFilters' own limits (and the server's URL length), not by a length of its own.
    filters_json: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> list[ModelInfoShort]:
    filters = parse_filters(filters_json)
    return await hub.search_models(query, limit=limit, offset=offset, sort=parse_sort(sort), filters=filters)


@router.get("/model/{author}/{model_name}", response_model=ModelInfoDetailed, responses=error_responses(*_REPO_ERRORS))
async def model_details(hub: HubDep, author: str, model_name: str) -> ModelInfoDetailed:
    return await hub.get_model_details(f"{author}/{model_name}")


@router.get(
    "/model/{author}/{model_name}/gguf-providers",
    response_model=list[GGUFProvider],
    responses=error_responses(400, 422, *_REPO_ERRORS),
)
async def gguf_providers(
    hub: HubDep,
    fit_service: FitDep,
    author: str,
    model_name: str,
    fit: Annotated[bool, Query(description="(+) Add each variant's fit on the target machine and a recommended_variant")] = False,
    context: ContextQuery = None,
    ram_gb: RamQuery = None,
    vram_gb: VramQuery = None,
) -> list[GGUFProvider]:
    providers = await hub.get_gguf_providers(f"{author}/{model_name}")
    if not fit:  # exactly today's cost: no header is read
        return providers
    return await fit_service.annotate_providers(providers, context, ram_gb, vram_gb)
