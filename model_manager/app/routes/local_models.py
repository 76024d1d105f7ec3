"""`/local/models` and `/local/import`: the library's models, imports from a server path and uploads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from model_manager.app.deps import LocalStorageDep
from model_manager.app.multipart_upload import FILE_FIELD, MultipartUpload, content_length
from model_manager.core.models import ImportRequest, LocalModel, LocalModelSort

router = APIRouter(prefix="/local", tags=["local models"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        FILE_FIELD: {"type": "string", "format": "binary", "description": "The .gguf file"},
                        "display_name": {"type": "string", "maxLength": 200, "description": "Name in the library"},
                    },
                }
            }
        },
    }
}
_EXISTING = {200: {"model": LocalModel, "description": "A model with the same SHA-256 was already in the library"}}


@router.get("/models", response_model=list[LocalModel])
async def list_local_models(
    storage: LocalStorageDep,
    q: Annotated[str | None, Query(max_length=200, description="Part of the name, repo or file name")] = None,
    sort: LocalModelSort = LocalModelSort.imported,
) -> list[LocalModel]:
    return await storage.list_models(q, sort)


@router.get("/models/{model_id}", response_model=LocalModel)
async def get_local_model(storage: LocalStorageDep, model_id: str) -> LocalModel:
    return await storage.get_model(model_id)


@router.delete("/models/{model_id}", status_code=204, response_class=Response)
async def delete_local_model(
    storage: LocalStorageDep,
    model_id: str,
    force: Annotated[bool, Query(description="Delete even while a download or import still writes the file")] = False,
) -> Response:
    await storage.delete_model(model_id, force=force)
    return Response(status_code=204)


@router.post("/import", status_code=201, response_model=LocalModel, responses=_EXISTING)
async def import_local_file(storage: LocalStorageDep, body: ImportRequest, response: Response) -> LocalModel:
    model, created = await storage.import_file(body.file_path, body.action, body.display_name)
    response.status_code = 201 if created else 200
    return model


@router.post(
    "/import/upload", status_code=201, response_model=LocalModel, responses=_EXISTING, openapi_extra=_UPLOAD_BODY
)
async def upload_local_file(storage: LocalStorageDep, request: Request, response: Response) -> LocalModel:
    """Upload a .gguf file (multipart field `file`, optional `display_name`), streamed to disk as it arrives."""
    upload = MultipartUpload(request)
    filename = await upload.open_file()
    staged = await storage.stage_upload(upload.file_chunks(), filename, expected_size=content_length(request))
    model, created = await storage.register_upload(staged, upload.fields.get("display_name"))
    response.status_code = 201 if created else 200
    return model
