"""Body limits hold before anything is read: the token at the door, 1 MiB for JSON, bounded upload forms."""

from __future__ import annotations

import json
import socket

import pytest

from tests.app.test_local_models import BOUNDARY, MULTIPART, assert_error, assert_library_empty, multipart_body
from tests.conftest import TEST_TOKEN

MiB = 1024 * 1024
JSON_LIMIT = MiB


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection in the middle of its answer"
        body += chunk
    return int(status_line.split()[1]), headers, body


def _send_until_refused(sock: socket.socket, total: int) -> int:
    """Send up to `total` more body bytes; how many went out before the server's side of the connection was gone."""
    chunk = b" " * MiB
    sent = 0
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_a_200_mib_post_without_token_is_refused_before_its_body_is_read(live_server):
    """Scenario 6: the 401 comes after a few KiB of a declared 200 MiB body, and the server reads no more."""
    declared = 200 * MiB
    first_bytes = b'{"repo_id": "a/b", "filename": "' + b"x" * (16 * 1024)
    head = (
        "POST /local/download HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
        sock.sendall(head + first_bytes)
        # Before the fix the server waited here for the other 199.98 MiB: the read timed out.
        status, headers, body = _read_response(sock)
        assert status == 401
        assert headers["www-authenticate"] == "Bearer"
        assert headers["connection"] == "close"
        assert json.loads(body)["error_code"] == "INVALID_TOKEN"
        # The server closed its side: the rest of the body cannot go out (only what socket buffers hold does).
        sent = _send_until_refused(sock, declared - len(first_bytes))
    assert sent < 32 * MiB, f"the server went on reading the body ({sent} bytes more)"


def test_a_large_upload_without_token_is_refused_before_its_body_is_read(live_server, settings):
    declared = 200 * MiB
    head = (
        f"POST /local/import/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer wrong-{TEST_TOKEN}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    first_bytes = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="m.gguf"\r\n\r\nGGUF'.encode()
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
        sock.sendall(head + first_bytes)
        status, _, body = _read_response(sock)
        assert (status, json.loads(body)["error_code"]) == (401, "INVALID_TOKEN")
        sent = _send_until_refused(sock, declared)
    assert sent < 32 * MiB
    assert [p.name for p in settings.models_dir.iterdir()] == []


def test_json_declared_past_1_mib_is_413_before_the_body_is_read(live_server):
    declared = 50 * MiB
    head = (
        f"POST /local/import HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TEST_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
        sock.sendall(head + b'{"file_path": "/')
        status, headers, body = _read_response(sock)
        assert status == 413
        assert headers["connection"] == "close"
        envelope = json.loads(body)
        assert envelope["error_code"] == "PAYLOAD_TOO_LARGE"
        assert envelope["details"] == {"max_bytes": JSON_LIMIT}
        assert _send_until_refused(sock, declared) < 32 * MiB


@pytest.mark.parametrize("path", ["/local/download", "/local/import", "/local/storage/cleanup"])
def test_json_declared_past_1_mib_is_413_on_every_route_that_takes_no_file(client, path):
    body = b"{" + b" " * JSON_LIMIT + b"}"
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_json_of_exactly_1_mib_is_read(client):
    body = json.dumps({"repo_id": "a/b", "filename": "m.gguf", "revision": "main"}).encode()
    body += b" " * (JSON_LIMIT - len(body))
    response = client.post("/local/download", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code not in (413, 422), response.text


def test_json_streamed_past_1_mib_without_a_length_is_413(live_server):
    def chunks():
        yield b'{"file_path": "/'
        for _ in range(4):
            yield b"x" * (JSON_LIMIT // 2)

    with live_server.client() as client:
        response = client.post("/local/import", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_a_401_to_an_allowed_origin_carries_cors_headers(client):
    client.headers.pop("Authorization")
    response = client.post("/local/download", json={}, headers={"Origin": "http://page.test"})
    assert_error(response, 401, "INVALID_TOKEN")
    assert response.headers["access-control-allow-origin"] == "*"


def test_cors_preflight_of_a_protected_route_needs_no_token(client):
    client.headers.pop("Authorization")
    response = client.options(
        "/local/download",
        headers={
            "Origin": "http://page.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]


# ------------------------------------------------------------------ the upload form


@pytest.mark.parametrize(
    "parts, message",
    [
        ([("file", "a.gguf", b"GGUF"), ("note", None, b"what is this")], "unknown field"),
        ([("display_name", None, b"x" * 201), ("file", "a.gguf", b"GGUF")], "200"),
        ([("display_name", None, b"a"), ("display_name", None, b"b"), ("file", "a.gguf", b"GGUF")], "once"),
        ([("display_name", "x.gguf", b"GGUF"), ("file", "a.gguf", b"GGUF")], "text"),
        ([("", None, b"x"), ("file", "a.gguf", b"GGUF")], "unknown field"),
    ],
)
def test_a_bad_upload_form_is_422_and_leaves_nothing(client, settings, parts, message):
    response = client.post("/local/import/upload", content=multipart_body(parts), headers=MULTIPART)
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert message in body["message"]
    assert_library_empty(client, settings)


@pytest.mark.parametrize("headers", [[b"X-Padding: " + b"p" * 64 * 1024], [b"X-Padding: p"] * 100])
def test_an_upload_part_with_endless_headers_is_refused(client, settings, headers):
    body = f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.gguf\"\r\n".encode()
    body += b"".join(header + b"\r\n" for header in headers) + b"\r\nGGUF\r\n" + f"--{BOUNDARY}--\r\n".encode()
    response = client.post("/local/import/upload", content=body, headers=MULTIPART)
    body = assert_error(response, 400, "INVALID_FILE")
    assert "header" in body["message"].lower()
    assert_library_empty(client, settings)


def test_an_upload_past_the_json_limit_is_read(client, settings, import_dir):
    from tests.gguf_factory import write_gguf

    data = write_gguf(import_dir / "big.gguf", tensors=64, tensor_elements=8192).read_bytes()
    assert len(data) > 2 * JSON_LIMIT
    response = client.post("/local/import/upload", content=multipart_body([("file", "big.gguf", data)]), headers=MULTIPART)
    assert response.status_code == 201, response.text
    assert response.json()["file_size_bytes"] == len(data)


def test_a_401_carries_the_cors_headers_of_an_allowed_origin_only(tmp_path, import_dir):
    from fastapi.testclient import TestClient

    from model_manager.app.main import create_app
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, import_dir, CORS_ORIGINS="http://page.test")
    with TestClient(create_app(settings)) as client:
        allowed = client.get("/local/models", headers={"Origin": "http://page.test"})
        other = client.get("/local/models", headers={"Origin": "http://evil.test"})
    assert allowed.status_code == other.status_code == 401
    assert allowed.headers["access-control-allow-origin"] == "http://page.test"
    assert "access-control-allow-origin" not in other.headers
