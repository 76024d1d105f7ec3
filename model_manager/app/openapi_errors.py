"""The error answers routes declare in the OpenAPI document, each in the one error envelope, so that a client
generated from /openapi.json knows every outcome. Routes list their statuses: `responses=error_responses(404, 409)`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from model_manager.core.models import ErrorEnvelope

# Which error codes each status carries (see app/errors.py STATUS_BY_CODE), as the document shows them.
ERROR_MEANINGS: dict[int, str] = {
    400: "INVALID_FILE or INVALID_FILTERS: the request names a file, filter or value the service cannot use",
    401: "INVALID_TOKEN: send `Authorization: Bearer <token>`",
    403: "PATH_NOT_ALLOWED (a path outside the allowed folders) or GATED_REPO (the Hub token has no access)",
    404: "NOT_FOUND, MODEL_NOT_FOUND, DOWNLOAD_NOT_FOUND or FILE_NOT_FOUND",
    409: "FILE_IN_USE, DOWNLOAD_FINISHED, AMBIGUOUS_VARIANT, CROSS_FILESYSTEM or MODEL_NOT_SIZABLE: the request "
    "conflicts with the current state of what it names",
    413: "PAYLOAD_TOO_LARGE: the JSON body is larger than 1 MiB (details.max_bytes)",
    422: "VALIDATION_ERROR: a parameter or body field is missing or malformed (details.errors)",
    429: "RATE_LIMITED: the Hub asks to slow down; retry after `Retry-After` seconds",
    502: "SERVICE_UNAVAILABLE: the Hub could not be reached or failed",
    503: "TOO_MANY_SUBSCRIBERS: too many open progress streams; retry later",
    507: "INSUFFICIENT_STORAGE: not enough free disk space (details say how much is needed)",
}

_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Always `Bearer`", "required": True, "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait, when the Hub said", "schema": {"type": "string"}}},
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries for these error statuses, each with the envelope schema. KeyError for a status
    that has no meaning above (add it there first)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorEnvelope, "description": ERROR_MEANINGS[status]}
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        responses[status] = entry
    return responses


def drop_default_validation_errors(app: FastAPI) -> None:
    """Make `app.openapi()` leave out the 422 FastAPI adds on its own to every route with parameters: it shows a
    schema we never send, and most of those routes cannot answer 422 at all. Routes that can declare it with
    `error_responses(422)`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                schema = operation.get("responses", {}).get("422", {}).get("content", {}).get("application/json", {})
                if schema.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                    del operation["responses"]["422"]
        schemas = document.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
