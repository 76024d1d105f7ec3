"""The HTTP client that downloads use: httpx, with timeouts fit for hours-long transfers and large reads.

No total timeout (a 100 GB file takes hours); a connection that connects or reads nothing for a while
counts as dropped, and the transfer retries it. Redirects are followed; httpx drops the Authorization
header when a redirect leaves the Hub's host, so the token never reaches the CDN.

httpcore reads a socket 64 KiB at a time, and every read then goes through the whole HTTP stack once:
on a fast link that per-read cost, not the network, limits one connection to about 200 MB/s here. The
network backend (`sockets.py`) reads up to `READ_BYTES` per call (the HTTP/1.1 parser takes any amount)
straight from a non-blocking socket, without anyio's per-read cancel scope and flow control.
"""

from __future__ import annotations

import httpcore
import httpx

from model_manager.core.services.downloads.sockets import SocketBackend

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
    """httpx's own HTTP/1.1 transport, over plain sockets read `READ_BYTES` at a time."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=SocketBackend(READ_BYTES),
        )
