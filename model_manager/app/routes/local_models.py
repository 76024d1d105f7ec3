"""`/local/models` and `/local/import`: the library's models, imports from a server path and uploads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from model_manager.app.deps import LocalStorageDep
from model_manager.app.multipart_upload import UPLOAD_REQUEST_BODY, MultipartUpload, content_length
from model_manager.app.openapi_errors import error_responses
from model_manager.app.routes.fit import FitDep
from model_manager.core.models import ExportRequest, ExportTarget, ImportRequest, LocalModel, LocalModelSort, ModelExport

router = APIRouter(prefix="/local", tags=["local models"])

RUN_CONTEXT_CAP = 32768  # a longer context than this is rarely wanted by default, and costs memory and speed

_UPLOAD_BODY = {"requestBody": UPLOAD_REQUEST_BODY}
_EXISTING = {200: {"model": LocalModel, "description": "A model with the same SHA-256 was already in the library"}}


@router.get("/models", response_model=list[LocalModel], responses=error_responses(422))
async def list_local_models(
    storage: LocalStorageDep,
    q: Annotated[str | None, Query(max_length=200, description="Part of the name, repo or file name")] = None,
    sort: LocalModelSort = LocalModelSort.imported,
) -> list[LocalModel]:
    return await storage.list_models(q, sort)


@router.get("/models/{model_id}", response_model=LocalModel, responses=error_responses(404))
async def get_local_model(storage: LocalStorageDep, fit: FitDep, model_id: str) -> LocalModel:
    """The model; its llama.cpp run command asks for the largest context (up to 32768) that fits the target."""
    return await storage.get_model(model_id, run_context=await fit.fitting_context(model_id, cap=RUN_CONTEXT_CAP))


@router.delete(
    "/models/{model_id}", status_code=204, response_class=Response, responses=error_responses(404, 409, 422)
)
async def delete_local_model(
    storage: LocalStorageDep,
    model_id: str,
    force: Annotated[bool, Query(description="Delete even while a download or import still writes the file")] = False,
) -> Response:
    await storage.delete_model(model_id, force=force)
    return Response(status_code=204)


@router.post(
    "/import",
    status_code=201,
    response_model=LocalModel,
    responses={**_EXISTING, **error_responses(400, 403, 404, 409, 413, 422, 507)},
)
async def import_local_file(storage: LocalStorageDep, body: ImportRequest, response: Response) -> LocalModel:
    model, created = await storage.import_file(body.file_path, body.action, body.display_name)
    response.status_code = 201 if created else 200
    return model


@router.post(
    "/import/upload",
    status_code=201,
    response_model=LocalModel,
    responses={**_EXISTING, **error_responses(400, 409, 422, 507)},
    openapi_extra=_UPLOAD_BODY,
)
async def upload_local_file(storage: LocalStorageDep, request: Request, response: Response) -> LocalModel:
    """Upload a .gguf file (multipart field `file`, optional `display_name`), streamed to disk as it arrives."""
    upload = MultipartUpload(request)
    filename = await upload.open_file()
    staged = await storage.stage_upload(upload.file_chunks(), filename, expected_size=content_length(request))
    model, created = await storage.register_upload(staged, upload.fields.get("display_name"))
    response.status_code = 201 if created else 200
    return model


@router.post(
    "/models/{model_id}/exports", status_code=201, response_model=ModelExport,
    responses=error_responses(400, 404, 409, 413, 422),
)
async def export_local_model(storage: LocalStorageDep, model_id: str, body: ExportRequest) -> ModelExport:
    """Make the model appear in Ollama, LM Studio or the Hugging Face cache, through links: no byte is copied."""
    return await storage.export_model(model_id, body.target, body.name)


@router.delete(
    "/models/{model_id}/exports/{target}", status_code=204, response_class=Response, responses=error_responses(404, 422)
)
async def remove_local_model_export(storage: LocalStorageDep, model_id: str, target: ExportTarget) -> Response:
    """Remove the export: the links and manifests it made, never a file the other tool made itself."""
    await storage.remove_export(model_id, target)
    return Response(status_code=204)
