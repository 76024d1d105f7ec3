"""The service skeleton: health, auth on every route, the error envelope."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from model_manager.app.main import create_app

# Public on purpose: health, the web page and the API docs (static; their calls need the token).
PUBLIC_PATHS = {"/health", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}

ENVELOPE_KEYS = {"error_code", "message", "details", "timestamp", "detail"}


def test_health_needs_no_token(settings):
    with TestClient(create_app(settings)) as client:
        response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert re.match(r"\d{4}-\d\d-\d\dT.*\+00:00$", body["timestamp"])
    assert body["version"]


def _protected_routes(app):
    # The OpenAPI schema lists every route with its methods, whatever way routers are nested inside the app.
    for path, operations in app.openapi()["paths"].items():
        if path in PUBLIC_PATHS:
            continue
        for method in operations:
            if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                yield method.upper(), re.sub(r"\{[^}/]+\}", "x", path)


def test_the_app_has_protected_routes(settings):
    assert len(list(_protected_routes(create_app(settings)))) >= 14


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic abc"}])
def test_every_route_but_public_ones_refuses_without_the_token(settings, headers):
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        checked = 0
        for method, path in _protected_routes(app):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, response.status_code, response.text)
            body = response.json()
            assert body["error_code"] == "INVALID_TOKEN"
            assert set(body) == ENVELOPE_KEYS
            checked += 1
    assert checked == len(list(_protected_routes(app)))


def test_unknown_path_gives_the_envelope(client):
    response = client.get("/no/such/thing")
    assert response.status_code == 404
    body = response.json()
    assert body["error_code"] == "NOT_FOUND"
    assert body["detail"]["error_code"] == "NOT_FOUND"
    assert set(body) == ENVELOPE_KEYS


def test_wrong_method_gives_the_envelope(client):
    response = client.post("/health")
    assert response.status_code == 405
    assert response.json()["error_code"] == "METHOD_NOT_ALLOWED"


def test_unhandled_error_is_a_500_envelope_without_internals(settings, auth):
    app = create_app(settings)

    @app.get("/boom")
    async def boom():
        raise RuntimeError("secret internal detail /etc/passwd")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom", headers=auth)
    assert response.status_code == 500
    assert response.json()["error_code"] == "INTERNAL_ERROR"
    assert "secret" not in response.text


def test_request_id_is_echoed(client):
    response = client.get("/health", headers={"X-Request-ID": "abc123"})
    assert response.headers["x-request-id"] == "abc123"
    assert client.get("/health").headers["x-request-id"]


def test_cors_never_pairs_wildcard_with_credentials(client):
    response = client.options(
        "/health", headers={"Origin": "http://example.test", "Access-Control-Request-Method": "GET"}
    )
    assert response.headers.get("access-control-allow-origin") == "*"
    assert response.headers.get("access-control-allow-credentials") is None


def test_token_is_generated_once_and_saved_private(tmp_path, import_dir):
    from model_manager.core.config.token import ensure_api_token
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, import_dir, MODEL_MANAGER_API_TOKEN="")
    token, created = ensure_api_token(settings)
    assert created and len(token) > 30
    assert settings.token_file.stat().st_mode & 0o777 == 0o600
    assert ensure_api_token(settings) == (token, False)


@pytest.mark.parametrize("path", sorted(PUBLIC_PATHS - {"/docs/oauth2-redirect"}))
def test_public_paths_answer_without_the_token(settings, path):
    with TestClient(create_app(settings)) as client:
        assert client.get(path).status_code == 200, path


def test_unknown_paths_are_protected_too(settings):
    with TestClient(create_app(settings)) as client:
        response = client.get("/no/such/thing")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_openapi_document_declares_the_bearer_scheme_on_protected_routes(settings):
    app = create_app(settings)
    document = app.openapi()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert ("security" in operation) == (path not in PUBLIC_PATHS), (method, path)


def test_a_wrong_method_names_every_method_of_the_path(client):
    response = client.request("PATCH", "/local/models/some-id")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "DELETE"}
