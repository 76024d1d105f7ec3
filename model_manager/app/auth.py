"""The token check at the door: a pure ASGI middleware, so a request without the token is refused before
a single byte of its body is read (a web page can send a large body as a simple request, with no preflight).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from model_manager.app.errors import early_refusal

TOKEN_MESSAGE = "missing or invalid API token: send 'Authorization: Bearer <token>'"


def bearer_token_matches(authorization: str | None, expected: str | None) -> bool:
    """True when the `Authorization` header value is `Bearer <expected>` (scheme in any case, constant-time compare)."""
    if not authorization or not expected:
        return False
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), expected.encode())


class TokenMiddleware:
    """Answers 401 `INVALID_TOKEN` (with `WWW-Authenticate: Bearer`) to any HTTP request outside the public
    paths that lacks the token kept in `app.state.api_token`. Unknown paths are protected too.

    Sits inside the CORS middleware, so preflights are answered before it and its 401s carry CORS headers.
    """

    def __init__(self, app: ASGIApp, public_paths: Iterable[str], public_prefixes: Iterable[str] = ()) -> None:
        self.app = app
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = tuple(public_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        expected = getattr(scope["app"].state, "api_token", None)
        if bearer_token_matches(Headers(scope=scope).get("authorization"), expected):
            await self.app(scope, receive, send)
            return
        response = early_refusal(scope, 401, "INVALID_TOKEN", TOKEN_MESSAGE, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def _is_public(self, path: str) -> bool:
        return path in self.public_paths or path.startswith(self.public_prefixes)
