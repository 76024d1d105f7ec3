"""The download client's own socket backend (`downloads/sockets.py`) and direct body reads (`downloads/body.py`)
over TLS, against a real HTTPS server on 127.0.0.1 with a throw-away certificate (made with `openssl`)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import http.server
import os
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import httpcore
import httpx
import pytest

from model_manager.core.services.downloads.body import DirectBody
from model_manager.core.services.downloads.sockets import SocketBackend
from tests.requirements import require

@pytest.fixture
def https_server(tmp_path):
    require(shutil.which("openssl") is not None, "the openssl command makes the test certificate (Debian's openssl)")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )
    served = tmp_path / "served"
    served.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 123)
    (served / "model.gguf").write_bytes(data)
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}/model.gguf", data, cert
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a second request reuses the TLS connection

    def log_message(self, *args) -> None:
        pass


def _client(cert: Path) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport()
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl.create_default_context(cafile=str(cert)), network_backend=SocketBackend(1024 * 1024)
    )
    return httpx.AsyncClient(transport=transport)


async def test_tls_bodies_arrive_whole_through_httpx_and_directly(https_server):
    url, data, cert = https_server
    async with _client(cert) as client:
        async with client.stream("GET", url) as response:
            through_httpx = b"".join([chunk async for chunk in response.aiter_raw()])
        assert through_httpx == data

        # As a part is fetched: the first chunk through httpx, the rest straight from the socket.
        async with client.stream("GET", url) as response:
            chunks = response.aiter_raw().__aiter__()
            received = bytearray(await chunks.__anext__())
            direct = DirectBody.of(response)
            assert direct is not None and 0 < direct.remaining == len(data) - len(received)
            buffer = bytearray(256 * 1024)
            while direct.remaining:
                count = await direct.read_into(memoryview(buffer))
                received += buffer[:count]
            assert [chunk async for chunk in chunks] == []  # h11 saw the end: the connection is reusable
        assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()

        async with client.stream("GET", url) as response:  # on the kept-alive connection
            assert b"".join([chunk async for chunk in response.aiter_raw()]) == data


async def test_a_wrong_certificate_is_a_connect_error(https_server, tmp_path):
    url, _, _ = https_server
    async with _client(Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")) as client:
        with pytest.raises(httpx.ConnectError):
            await asyncio.wait_for(client.get(url), 20)
