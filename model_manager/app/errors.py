"""One error envelope for every 4xx/5xx; status codes come from the exception type, never its text."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from model_manager.core.errors import ModelManagerError, RateLimitedError

logger = logging.getLogger("model_manager.errors")

STATUS_BY_CODE: dict[str, int] = {
    "INVALID_TOKEN": 401,
    "INVALID_FILTERS": 400,
    "VALIDATION_ERROR": 422,
    "NOT_FOUND": 404,
    "MODEL_NOT_FOUND": 404,
    "DOWNLOAD_NOT_FOUND": 404,
    "FILE_NOT_FOUND": 404,
    "INVALID_FILE": 400,
    "PAYLOAD_TOO_LARGE": 413,
    "PATH_NOT_ALLOWED": 403,
    "GATED_REPO": 403,
    "FILE_IN_USE": 409,
    "CROSS_FILESYSTEM": 409,
    "MODEL_NOT_SIZABLE": 409,
    "DOWNLOAD_FINISHED": 409,
    "AMBIGUOUS_VARIANT": 409,
    "INSUFFICIENT_STORAGE": 507,
    "TOO_MANY_SUBSCRIBERS": 503,
    "RATE_LIMITED": 429,
    "SERVICE_UNAVAILABLE": 502,
    "INTERNAL_ERROR": 500,
}

_CODE_BY_HTTP_STATUS = {401: "INVALID_TOKEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}


class InvalidTokenError(ModelManagerError):
    error_code = "INVALID_TOKEN"


class PayloadTooLargeError(StarletteHTTPException):
    """A request body past `max_bytes`, met while reading it. An HTTPException, because FastAPI turns any other
    error raised while it reads a body into a 400. The connection closes: the rest of the body is never read."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, too_large_message(max_bytes), headers={"Connection": "close"})
        self.max_bytes = max_bytes


def too_large_message(max_bytes: int) -> str:
    return f"the request body is larger than {max_bytes} bytes"


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "error_code": code,
        "message": message,
        "details": details,
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }
    body["detail"] = dict(body)
    return JSONResponse(status_code=status, content=jsonable_encoder(body), headers=headers)


def early_refusal(
    scope: Scope, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The envelope for a request refused before its body was read. When a body was announced, the answer
    says `Connection: close`, so the server drops the connection instead of reading (and discarding) that body."""
    request_headers = Headers(scope=scope)
    announces_body = request_headers.get("content-length", "0") != "0" or "transfer-encoding" in request_headers
    if announces_body:
        headers = {**(headers or {}), "Connection": "close"}
    return error_response(status, code, message, details, headers)


async def _service_error(request: Request, exc: ModelManagerError) -> JSONResponse:
    status = STATUS_BY_CODE.get(exc.error_code, 500)
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, InvalidTokenError):
        headers["WWW-Authenticate"] = "Bearer"
    if status >= 500:
        logger.warning("request failed: %s %s", exc.error_code, exc.message)
    return error_response(status, exc.error_code, exc.message, exc.details, headers or None)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _CODE_BY_HTTP_STATUS.get(exc.status_code, "INTERNAL_ERROR" if exc.status_code >= 500 else "HTTP_ERROR")
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    details = {"max_bytes": exc.max_bytes} if isinstance(exc, PayloadTooLargeError) else None
    headers = getattr(exc, "headers", None)
    allowed = _documented_methods(request) if exc.status_code == 405 else None
    if allowed:
        headers = {**(headers or {}), "Allow": allowed}
    return error_response(exc.status_code, code, message, details, headers)


def _documented_methods(request: Request) -> str | None:
    """Every method the OpenAPI document gives the request's path. Starlette's 405 names the methods of the
    first route with that path only, though a path such as /local/models/{model_id} has GET and DELETE."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{[^}/]+\\\}", "[^/]+", re.escape(template)), request.url.path):
            methods.update(method.upper() for method in operations)
    return ", ".join(sorted(methods)) or None


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
    # Drop echoed input: an uploaded body or a token-like value must not be reflected back.
    for error in errors:
        error.pop("input", None)
        error.pop("ctx", None) if not isinstance(error.get("ctx"), dict) else None
    body = {
        "error_code": "VALIDATION_ERROR",
        "message": "the request is not valid: " + "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors
        ),
        "details": {"errors": errors},
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "detail": errors,
    }
    return JSONResponse(status_code=422, content=body)


async def _unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "INTERNAL_ERROR", "internal error; see the service log for details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ModelManagerError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unhandled_error)
