"""A size limit on request bodies (JSON ones: 1 MiB), judged by the declared Content-Length before anything is
read, and by counting the bytes as they arrive when no length is declared (chunked).

Starlette's own RequestBodyLimitMiddleware answers a declared oversize length with a plain-text 413 that
replaces our error envelope, hence this small one.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_manager.app.errors import PayloadTooLargeError, early_refusal, too_large_message

JSON_BODY_LIMIT = 1024 * 1024


class BodyLimitMiddleware:
    """Answers 413 `PAYLOAD_TOO_LARGE` (details `{"max_bytes"}`) to a body past `max_bytes`, except on the
    `unlimited_paths` (uploads, bounded by free disk space instead).

    A declared length past the limit is refused at once, body unread. Without a declared length, the receive
    channel raises `PayloadTooLargeError` once the count passes the limit, which the app's handler turns into
    the same envelope.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, unlimited_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.unlimited_paths = frozenset(unlimited_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.unlimited_paths:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = early_refusal(
                scope, 413, "PAYLOAD_TOO_LARGE", too_large_message(self.max_bytes), {"max_bytes": self.max_bytes}
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLargeError(self.max_bytes)
            return message

        await self.app(scope, counted_receive, send)
