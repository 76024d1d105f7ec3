"""The HTTP client that downloads use: httpx, with timeouts fit for hours-long transfers and large reads.

No total timeout (a 100 GB file takes hours); a connection that connects or reads nothing for a while
counts as dropped, and the transfer retries it. Redirects are followed; httpx drops the Authorization
header when a redirect leaves the Hub's host, so the token never reaches the CDN.

httpcore reads a socket 64 KiB at a time, and every read then goes through the whole HTTP stack once:
on a fast link that per-read cost, not the network, limits one connection to about 200 MB/s here. The
network backend below reads up to 1 MiB per call instead (the HTTP/1.1 parser takes any amount), which
makes one connection 2 to 3 times faster.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpcore
import httpx

READ_BYTES = 1024 * 1024
CONNECT_TIMEOUT_SECONDS = 30.0
READ_TIMEOUT_SECONDS = 60.0  # a read stalled this long counts as a dropped connection


def download_client(max_connections: int) -> httpx.AsyncClient:
    """An AsyncClient for file transfers: no total timeout, redirects followed, large socket reads."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(
        transport=LargeReadTransport(limits),
        timeout=httpx.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS, write=60.0, pool=None),
        follow_redirects=True,
    )


class LargeReadTransport(httpx.AsyncHTTPTransport):
    """httpx's own HTTP/1.1 transport, over sockets read `READ_BYTES` at a time."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_LargeReadBackend(),
        )


class _LargeReadBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _LargeReadStream(await self._backend.connect_tcp(*args, **kwargs))

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _LargeReadStream(await self._backend.connect_unix_socket(*args, **kwargs))

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _LargeReadStream(httpcore.AsyncNetworkStream):
    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max(max_bytes, READ_BYTES), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _LargeReadStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)
