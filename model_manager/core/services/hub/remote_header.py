"""The GGUF header of a Hub file, read before download with HTTP Range requests, and kept for ever.

A header (key/values and tensor infos) sits at the start of the file: a few MiB for a vocabulary of
150k tokens, whatever the model's size. It is read in growing chunks (2 MiB, then 4x more each time,
never past MAX_HEADER_BYTES) until the tensor infos parse. The first request goes to the Hub's resolve
URL with the Hub token, and httpx drops that token when the Hub redirects to its CDN, as downloads do;
further chunks go straight to the CDN URL the redirect named, without the token.

A file at one commit with one ETag never changes, so its header is stored in the catalogue under
(repo, commit, file, ETag) and never fetched again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from model_manager.core.errors import GatedRepoError, HubUnavailableError, NotFoundError, RateLimitedError
from model_manager.core.gguf_format import GGUFFormatError, GGUFHeader, GGUFTruncatedError, TensorInfo, parse_gguf_header

logger = logging.getLogger("model_manager.hub")

FIRST_CHUNK_BYTES = 2 * 1024 * 1024
GROWTH = 4
HINT_MARGIN_BYTES = 64 * 1024  # siblings' headers differ by a few names and numbers, chat templates at most
MAX_HEADER_BYTES = 64 * 1024 * 1024
_KEPT_STRING_LENGTH = 4096  # chat templates and licences are not needed to size a model


@dataclass(frozen=True)
class HubFileRef:
    """One file of a Hub repo at one commit, and what identifies its bytes (ETag: the LFS sha256 or blob id)."""

    repo_id: str
    commit: str
    filename: str
    etag: str
    url: str  # the resolve URL at `commit`, on the Hub's endpoint


class HeaderStore(Protocol):
    def get_remote_header(self, repo_id: str, commit: str, filename: str, etag: str) -> str | None: ...
    def save_remote_header(self, repo_id: str, commit: str, filename: str, etag: str, header: str) -> None: ...


class RemoteHeaderReader:
    """Reads (and stores) the GGUF headers of Hub files. One per app; `store` is the catalogue."""

    def __init__(self, store: HeaderStore, auth_headers: dict[str, str], timeout: float) -> None:
        self._store = store
        self._auth = auth_headers
        self._timeout = timeout
        self._inflight: dict[HubFileRef, asyncio.Future[GGUFHeader]] = {}
        self.fetched = 0  # headers fetched from the network since start, for tests and logs

    async def header(self, ref: HubFileRef, size_hint: int | None = None) -> GGUFHeader:
        """The header of `ref`, from the catalogue or else from the Hub (then stored).

        `size_hint`: the header size of a sibling (another quantization of the same model, same vocabulary);
        the first request then asks for that much and a margin, so that one request is usually enough.

        Raises `NotFoundError`, `GatedRepoError`, `RateLimitedError` or `HubUnavailableError` when the
        Hub refuses, `GGUFFormatError` when the file's start is not a GGUF header of at most 64 MiB.
        """
        stored = await asyncio.to_thread(self._store.get_remote_header, ref.repo_id, ref.commit, ref.filename, ref.etag)
        if stored is not None:
            return header_from_json(stored)
        if ref in self._inflight:  # the same file asked twice at once: fetch it once
            return await asyncio.shield(self._inflight[ref])
        future: asyncio.Future[GGUFHeader] = asyncio.get_running_loop().create_future()
        self._inflight[ref] = future
        try:
            first = size_hint + HINT_MARGIN_BYTES if size_hint else FIRST_CHUNK_BYTES
            header = await self._fetch(ref, min(first, MAX_HEADER_BYTES))
            await asyncio.to_thread(
                self._store.save_remote_header, ref.repo_id, ref.commit, ref.filename, ref.etag, header_to_json(header)
            )
            future.set_result(header)
            return header
        except asyncio.CancelledError:
            future.cancel()  # whoever waits on the same file is cancelled too; the next request fetches again
            raise
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._inflight[ref]

    async def _fetch(self, ref: HubFileRef, first: int) -> GGUFHeader:
        data = bytearray()
        url, headers = ref.url, dict(self._auth)
        wanted = first
        file_size: int | None = None
        timeout = httpx.Timeout(self._timeout)
        async with httpx.AsyncClient(follow_redirects=True, timeout=timeout) as client:
            while True:
                chunk, file_size, final_url = await self._range(client, url, headers, len(data), wanted - 1, ref)
                data += chunk
                if urlsplit(final_url)[:2] != urlsplit(url)[:2]:
                    url, headers = final_url, {}  # the CDN: no token, and no second trip through the Hub
                complete = file_size is not None and len(data) >= file_size
                try:
                    # Only the header is wanted: where the tensor data ends is not checked against the size.
                    header = parse_gguf_header(bytes(data))
                except GGUFTruncatedError:
                    if complete or not chunk or wanted >= MAX_HEADER_BYTES:
                        raise GGUFFormatError(
                            f"{ref.filename} in {ref.repo_id}: no complete GGUF header in its first "
                            f"{len(data)} bytes (the limit is {MAX_HEADER_BYTES})"
                        ) from None
                    wanted = min(wanted * GROWTH, MAX_HEADER_BYTES)
                    continue
                self.fetched += 1
                logger.info("read the GGUF header of %s/%s: %d bytes", ref.repo_id, ref.filename, len(data))
                return header

    async def _range(
        self, client: httpx.AsyncClient, url: str, headers: dict[str, str], start: int, end: int, ref: HubFileRef
    ) -> tuple[bytes, int | None, str]:
        """Bytes start..end (inclusive) of the file, its total size if told, and the URL that answered."""
        request_headers = {**headers, "Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"}
        what = f"the header of {ref.repo_id}/{ref.filename}"
        try:
            async with client.stream("GET", url, headers=request_headers) as response:
                if response.status_code == 416:  # past the end: the file is shorter than the bytes asked for
                    return b"", start, str(response.url)
                _raise_for_status(response, what)
                total = _total_size(response)
                body = bytearray()
                skip = start if response.status_code == 200 else 0  # a server that ignores Range sends it all
                async for piece in response.aiter_raw():
                    body += piece
                    if len(body) >= skip + (end - start + 1):
                        break  # enough: closing the stream drops the rest
                if response.status_code == 200 and total is None:
                    total = int(response.headers["content-length"]) if "content-length" in response.headers else None
                return bytes(body[skip : skip + end - start + 1]), total, str(response.url)
        except httpx.TimeoutException as error:
            raise HubUnavailableError(f"{what}: the Hub did not answer within {self._timeout:g} s") from error
        except httpx.HTTPError as error:
            raise HubUnavailableError(f"{what}: cannot reach the Hub ({type(error).__name__})") from error


def _total_size(response: httpx.Response) -> int | None:
    content_range = response.headers.get("content-range", "")
    _, _, total = content_range.rpartition("/")
    return int(total) if total.isdigit() else None


def _raise_for_status(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if status in (200, 206):
        return
    code = response.headers.get("x-error-code", "")
    if code == "GatedRepo" or status == 403:
        raise GatedRepoError(f"{what}: the repo is gated; accept its terms on the Hub and set HF_TOKEN")
    if status in (401, 404):
        raise NotFoundError(f"{what}: no such file on the Hub (or it is private and HF_TOKEN has no access)")
    if status == 429:
        retry = response.headers.get("retry-after", "")
        raise RateLimitedError(f"{what}: the Hub is rate limiting us", retry_after=int(retry) if retry.isdigit() else None)
    raise HubUnavailableError(f"{what}: the Hub answered HTTP {status}", details={"hub_status": status})


# --- storage form ------------------------------------------------------------------------------------


def _kept(value: Any) -> bool:
    return not (isinstance(value, str) and len(value) > _KEPT_STRING_LENGTH)


def header_to_json(header: GGUFHeader) -> str:
    """The header as compact JSON: key/values (long strings left out) and tensor infos."""
    return json.dumps({
        "version": header.version,
        "tensor_count": header.tensor_count,
        "kv_count": header.kv_count,
        "metadata": {k: v for k, v in header.metadata.items() if _kept(v)},
        "parameter_count": header.parameter_count,
        "header_size": header.header_size,
        "data_end": header.data_end,
        "tensors": [[t.name, list(t.shape), t.type_id, t.n_bytes] for t in header.tensors or ()],
    }, separators=(",", ":"))


def header_from_json(text: str) -> GGUFHeader:
    """The `GGUFHeader` that `header_to_json` stored."""
    data = json.loads(text)
    tensors = tuple(TensorInfo(name, tuple(shape), type_id, n_bytes) for name, shape, type_id, n_bytes in data["tensors"])
    return GGUFHeader(
        data["version"], data["tensor_count"], data["kv_count"], data["metadata"], data["parameter_count"],
        data["header_size"], data["data_end"], tensors,
    )
