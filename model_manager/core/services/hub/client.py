"""The Hub calls the service makes, on `huggingface_hub`: off the event loop, under a deadline, errors mapped by type.

Every call runs in a worker thread (`asyncio.to_thread`) inside `asyncio.wait_for(..., HUB_TIMEOUT_SECONDS)`,
and the HTTP request itself gets the same timeout so the thread ends too. Endpoint and token come from
Settings and are passed explicitly: huggingface_hub reads `HF_ENDPOINT` once, at import time.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
from huggingface_hub import errors as hf_errors
from huggingface_hub.file_download import HfFileMetadata
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status, parse_ratelimit_headers

from model_manager.core.config import Settings
from model_manager.core.errors import (
    GatedRepoError,
    HubUnavailableError,
    ModelManagerError,
    NotFoundError,
    RateLimitedError,
)
from model_manager.core.services.hub.cache import TTLCache

try:  # huggingface_hub 2.x speaks through httpx2, 1.x through httpx
    import httpx2 as hub_http
except ImportError:  # pragma: no cover
    import httpx as hub_http  # type: ignore[no-redef]

logger = logging.getLogger("model_manager.hub")

T = TypeVar("T")
QueryParams = tuple[tuple[str, str], ...]
HUB_MAX_PAGE_SIZE = 1000  # the Hub serves at most this many models per page of /api/models
README_MAX_BYTES = 512 * 1024
_TEXT_READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ModelPage:
    """One page of `GET /api/models`, and the URL of the next one (None on the last page)."""

    models: tuple[ModelInfo, ...]
    next_url: str | None


class HubClient:
    """Blocking huggingface_hub calls turned into awaitables that raise the service's own errors.

    Raises on every call: `NotFoundError` (unknown or private repo, revision or file), `GatedRepoError`,
    `RateLimitedError` (HTTP 429, with the Hub's Retry-After), `HubUnavailableError` (unreachable, timed out,
    or any other failing answer).
    """

    def __init__(self, settings: Settings) -> None:
        self.endpoint = settings.hub_endpoint
        self.token = settings.hf_token or None
        self.timeout = settings.hub_timeout_seconds
        # token=False when none is configured: never pick up a token saved on this machine by `hf auth login`.
        self._token_arg: str | bool = self.token or False
        self.api = HfApi(endpoint=self.endpoint, token=self._token_arg)
        self.cache = TTLCache(settings.hub_cache_ttl_seconds)

    # ------------------------------------------------------------------ calls

    async def model_info(
        self, repo_id: str, *, revision: str | None = None, files_metadata: bool = True, cached: bool = True
    ) -> ModelInfo:
        """The repo's model_info (with sizes and LFS sha256 of its files when `files_metadata`)."""
        return await self._answer(
            ("model_info", repo_id, revision, files_metadata),
            cached,
            f"model info of {repo_id}",
            lambda: self.api.model_info(
                repo_id, revision=revision, files_metadata=files_metadata, timeout=self.timeout
            ),
        )

    async def models_page(self, params: QueryParams | None = None, next_url: str | None = None) -> ModelPage:
        """One page of the model listing: the first one for `params`, or the one at `next_url`. Cached."""
        return await self._answer(
            ("models_page", next_url or params),
            True,
            "the model listing",
            lambda: self._fetch_models_page(params, next_url),
        )

    async def iter_models(self, params: QueryParams, max_pages: int) -> AsyncIterator[ModelInfo]:
        """The models of the listing for `params`, page by page (each page one Hub request), at most `max_pages`."""
        page = await self.models_page(params=params)
        pages = 1
        while True:
            for model in page.models:
                yield model
            if page.next_url is None or pages >= max_pages:
                return
            page = await self.models_page(next_url=page.next_url)
            pages += 1

    async def file_metadata(self, repo_id: str, filename: str, revision: str, cached: bool = False) -> HfFileMetadata:
        """A HEAD of the file's resolve URL with our token: size, ETag, commit. Detects gated repos we cannot read."""
        url = self.file_url(repo_id, filename, revision)
        return await self._answer(
            ("file_metadata", repo_id, filename, revision),
            cached,
            f"metadata of {repo_id}/{filename}",
            lambda: get_hf_file_metadata(url, token=self._token_arg, timeout=self.timeout, endpoint=self.endpoint),
        )

    async def may_read(self, repo_id: str, filename: str, revision: str) -> bool:
        """Whether our token may read the file of a gated repo: one HEAD, whose verdict (yes or no) is cached."""

        async def ask() -> bool:
            try:
                await self.file_metadata(repo_id, filename, revision)
            except GatedRepoError:
                return False
            return True

        return await self.cache.get_or_fetch(("may_read", repo_id, filename, revision), ask)

    async def read_text(self, repo_id: str, filename: str, revision: str) -> str | None:
        """The first README_MAX_BYTES of a text file of the repo (the README); None without such a file. Cached."""
        try:
            return await self._answer(
                ("text", repo_id, filename, revision),
                True,
                f"{filename} of {repo_id}",
                lambda: self._fetch_text(repo_id, filename, revision),
            )
        except NotFoundError:
            return None

    def file_url(self, repo_id: str, filename: str, revision: str) -> str:
        """The file's resolve URL on our endpoint, revision and path URL-encoded."""
        return hf_hub_url(repo_id, filename, revision=revision, endpoint=self.endpoint)

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    # ------------------------------------------------------------------ blocking parts (worker threads)

    def _fetch_models_page(self, params: QueryParams | None, next_url: str | None) -> ModelPage:
        # One request per page, on huggingface_hub's own session, headers, error parsing and ModelInfo.
        # Not HfApi.list_models: its pager retries 429/5xx/network errors 5 times and sleeps Retry-After+1 s
        # between tries, with no request timeout, so a rate limit would surface as our timeout.
        session = get_session()
        headers = build_hf_headers(token=self._token_arg)
        if next_url is None:
            url = f"{self.endpoint}/api/models"
            response = session.get(url, params=list(params or ()), headers=headers, timeout=self.timeout)
        else:
            response = session.get(next_url, headers=headers, timeout=self.timeout)
        hf_raise_for_status(response)
        items = response.json()
        if not isinstance(items, list):
            raise json.JSONDecodeError("expected a list of models", response.text[:200], 0)
        following = response.links.get("next", {}).get("url")
        if following is not None and not self._same_origin(following):
            logger.warning("ignoring a next-page link to another host: %s", urlsplit(following).netloc)
            following = None
        return ModelPage(tuple(ModelInfo(**item) for item in items), following)

    def _fetch_text(self, repo_id: str, filename: str, revision: str) -> str:
        # Streamed: at most README_MAX_BYTES (+ one chunk) is read, then the connection is closed, so a
        # README of any size costs no more than the limit in memory and transfer.
        url = self.file_url(repo_id, filename, revision)
        headers = build_hf_headers(token=self._token_arg)
        kept = bytearray()
        with get_session().stream("GET", url, headers=headers, timeout=self.timeout) as response:
            hf_raise_for_status(response)
            for chunk in response.iter_bytes(_TEXT_READ_CHUNK):
                kept += chunk
                if len(kept) >= README_MAX_BYTES:
                    break
        # A character cut in half by the limit is dropped rather than shown as U+FFFD.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return decoder.decode(bytes(kept[:README_MAX_BYTES]), final=False)

    def _same_origin(self, url: str) -> bool:
        ours, theirs = urlsplit(self.endpoint), urlsplit(url)
        return (ours.scheme, ours.netloc) == (theirs.scheme, theirs.netloc)

    # ------------------------------------------------------------------ deadline and error mapping

    async def _answer(self, key: tuple[Any, ...], cached: bool, what: str, call: Callable[[], T]) -> T:
        """`call()` run by `_run`, through the cache when `cached`."""
        if not cached:
            return await self._run(what, call)
        return await self.cache.get_or_fetch(key, lambda: self._run(what, call))

    async def _run(self, what: str, call: Callable[[], T]) -> T:
        try:
            return await asyncio.wait_for(asyncio.to_thread(call), self.timeout)
        except Exception as exc:  # noqa: BLE001 - mapped by type just below, anything else re-raised
            mapped = self._service_error(exc, what)
            if mapped is exc:
                raise
            raise mapped from exc

    def _service_error(self, exc: Exception, what: str) -> Exception:
        """The service error for a failed Hub call, chosen from the exception's type (never its text)."""
        if isinstance(exc, ModelManagerError):
            return exc
        # GatedRepoError subclasses RepositoryNotFoundError: test it first.
        if isinstance(exc, hf_errors.GatedRepoError):
            return GatedRepoError(
                f"{what}: the repo is gated; accept its terms on the Hub and set HF_TOKEN to a token with access",
                details={"token_configured": self.token is not None},
            )
        if isinstance(exc, hf_errors.RepositoryNotFoundError):
            return NotFoundError(f"{what}: no such repo on the Hub (or it is private and HF_TOKEN has no access)")
        if isinstance(exc, hf_errors.RevisionNotFoundError):
            return NotFoundError(f"{what}: no such revision on the Hub")
        if isinstance(exc, hf_errors.EntryNotFoundError):
            return NotFoundError(f"{what}: no such file on the Hub")
        if isinstance(exc, hf_errors.HFValidationError):
            return NotFoundError(f"{what}: not a valid repo id or revision")
        if isinstance(exc, hf_errors.HfHubHTTPError) and exc.response is not None:
            status = exc.response.status_code
            if status == 429:
                retry_after = _retry_after(exc.response.headers)
                return RateLimitedError(
                    f"{what}: the Hub is rate limiting us; retry in {retry_after or 'a few'} s"
                    + ("" if self.token else " (setting HF_TOKEN raises the limit)"),
                    retry_after=retry_after,
                )
            hint = "check HF_TOKEN" if status in (401, 403) else "try again later"
            return HubUnavailableError(
                f"{what}: the Hub answered HTTP {status}; {hint}", details={"hub_status": status}
            )
        if isinstance(exc, (TimeoutError, hub_http.TimeoutException)):
            return HubUnavailableError(
                f"{what}: the Hub did not answer within {self.timeout:g} s", details={"reason": "timeout"}
            )
        if isinstance(exc, (hub_http.HTTPError, OSError)):
            return HubUnavailableError(
                f"{what}: cannot reach the Hub at {self.endpoint} ({type(exc).__name__})",
                details={"reason": "unreachable"},
            )
        if isinstance(exc, json.JSONDecodeError):
            return HubUnavailableError(f"{what}: the Hub sent an answer that is not the expected JSON")
        return exc


def _retry_after(headers: Any) -> int | None:
    """Seconds to wait, from `Retry-After` (delay-seconds) or else the `RateLimit` header's reset time."""
    value = (headers.get("retry-after") or "").strip()
    if value.isdigit():
        return int(value)
    info = parse_ratelimit_headers(headers)
    return info.reset_in_seconds if info is not None else None


def query_params(**values: str | int | bool | Sequence[str] | None) -> QueryParams:
    """Query parameters as a hashable tuple (for the cache), lists as repeated keys, None left out."""
    pairs: list[tuple[str, str]] = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        elif isinstance(value, (list, tuple)):
            pairs.extend((name, str(item)) for item in value)
        else:
            pairs.append((name, str(value)))
    return tuple(pairs)
