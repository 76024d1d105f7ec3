"""The CLI's HTTP client: where the service is, its token, the error envelope and the SSE stream."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx

from model_manager.core.config import Settings

# Reads stay open longer than the service's 15 s keep-alive ping, so a quiet SSE stream is not a timeout.
_TIMEOUT = httpx.Timeout(30.0, read=60.0)


@cache
def _tls_context() -> ssl.SSLContext:
    # Built once per process: httpx would load the CA store again for every client (~0.1 s each).
    return ssl.create_default_context()


class CliError(Exception):
    """An error shown to the user as one line (no traceback), ending the command with `exit_code`."""

    def __init__(self, message: str, *, exit_code: int = 1, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint


class ApiError(CliError):
    """The service answered with an error envelope; `message` is the envelope's message."""

    def __init__(self, status_code: int, error_code: str, message: str) -> None:
        hint = None
        if error_code == "INVALID_TOKEN":
            hint = "Pass --token, set MODEL_MANAGER_API_TOKEN, or run `model-manager token` where the service runs."
        super().__init__(message, hint=hint)
        self.status_code = status_code
        self.error_code = error_code


class ServiceUnreachableError(CliError):
    """No answer from the service at all: not started, wrong URL, or the connection broke."""


def default_service_url(settings: Settings) -> str:
    """The URL of a service started on this machine with these settings (a wildcard host means loopback)."""
    host = settings.host if settings.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def saved_token(settings: Settings) -> str | None:
    """The token configured in the environment or `.env`, else the one the service saved in its data folder."""
    if settings.api_token:
        return settings.api_token
    try:
        return settings.token_file.read_text().strip() or None
    except OSError:
        return None


def api_error_from(response: httpx.Response) -> ApiError:
    """The `ApiError` an error response stands for; its message is the envelope's, whatever the body holds."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return ApiError(response.status_code, str(body.get("error_code", "HTTP_ERROR")), body["message"])
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return ApiError(response.status_code, "HTTP_ERROR", body["detail"])
    text = response.text.strip()[:200] or response.reason_phrase
    return ApiError(response.status_code, "HTTP_ERROR", f"HTTP {response.status_code}: {text}")


@dataclass
class ServerEvent:
    """One Server-Sent Event: its `data` lines joined, and its `id` if it had one."""

    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(lines: Iterable[str]) -> Iterator[ServerEvent]:
    """The events in a `text/event-stream`, line by line. Comments (`: ping`) and empty events are skipped."""
    data: list[str] = []
    event_id: str | None = None
    for line in lines:
        line = line.rstrip("\r\n")
        if not line:
            if data:
                yield ServerEvent("\n".join(data), event_id)
            data, event_id = [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
    if data:
        yield ServerEvent("\n".join(data), event_id)


class ServiceClient:
    """A synchronous client of the model-manager HTTP API. Every method raises `CliError` subclasses only."""

    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=_TIMEOUT, verify=_tls_context()
        )

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; an error status raises `ApiError` with the envelope's message."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as error:
            raise ServiceUnreachableError(f"the service at {self.url} did not answer in time ({error})") from error
        except httpx.TransportError as error:
            raise ServiceUnreachableError(
                f"cannot reach the service at {self.url}: {error}",
                hint="Start it with `model-manager serve` or `./start.sh`, or point --url / MODEL_MANAGER_URL at it.",
            ) from error
        if response.status_code >= 400:
            raise api_error_from(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=_without_none(params)).json()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.request("POST", path, json=body, **kwargs)
        return response.json() if response.content else None

    def delete(self, path: str, **params: Any) -> Any:
        response = self.request("DELETE", path, params=_without_none(params))
        return response.json() if response.content else None

    def events(self, path: str, **params: Any) -> Iterator[Any]:
        """The JSON payloads of an SSE endpoint, as they arrive, until the service ends the stream."""
        try:
            with self._http.stream("GET", path, params=_without_none(params)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise api_error_from(response)
                for event in parse_sse(response.iter_lines()):
                    yield event.json()
        except httpx.TransportError as error:
            raise ServiceUnreachableError(f"lost the event stream from {self.url}: {error}") from error


def _without_none(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}


@dataclass
class ServiceAddress:
    """Where the service is and which token to send; unset values fall back to the settings on this machine."""

    url: str | None = None
    token: str | None = None

    def connect(self) -> ServiceClient:
        """A client for the service; raises `CliError` when no token is given, configured or saved."""
        settings = Settings()
        token = self.token or saved_token(settings)
        if not token:
            raise CliError(
                "no API token: the service needs one for every request",
                hint="Pass --token, set MODEL_MANAGER_API_TOKEN, or run `model-manager token` where the service runs.",
            )
        return ServiceClient(self.url or default_service_url(settings), token)


def service_for(ctx: Any) -> ServiceClient:
    """The client for the service named by the command line's global `--url` / `--token` options."""
    address = ctx.find_object(ServiceAddress) or ServiceAddress()
    return address.connect()


def expand_id(given: str, known_ids: Iterable[str]) -> str:
    """The one known id that starts with `given` (ids may be shortened, like git hashes), else `given` itself.

    Falling back to `given` lets the service answer with its own not-found message.
    """
    matches = [known for known in known_ids if known.startswith(given)]
    if len(matches) > 1:
        raise CliError(f"'{given}' matches {len(matches)} ids; give more characters")
    return matches[0] if matches else given
