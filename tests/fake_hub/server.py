"""A fake Hugging Face Hub served over real HTTP on 127.0.0.1, for tests.

Two listeners run in daemon threads:

* ``FakeHub.url``: the Hub itself (``/api/...`` JSON endpoints and ``/{repo_id}/resolve/{revision}/{path}``).
* ``FakeHub.cdn_url``: a second origin (another port) that LFS ``resolve`` requests redirect to, like the
  real Hub's CDN. It serves bytes by sha256 and needs no credentials (the URL plays the part of a signed URL).

The responses follow what the real ``huggingface_hub`` client sends and parses (checked against
huggingface_hub 2.x: ``HfApi.list_models``, ``model_info``, ``list_repo_tree``, ``get_hf_file_metadata``,
``hf_hub_download`` and ``hf_raise_for_status``), so tests run the real client against it.

Faults (throttling, dropped connections, corrupted bytes, error statuses, slow API) are switched on and off
through attributes of ``FakeHub`` at any time, even while a transfer is running.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit

import yaml

__all__ = [
    "DEFAULT_VALID_TOKEN",
    "FakeHub",
    "FakeRepo",
    "RecordedRequest",
    "LFS_SUFFIXES",
]

#: Files with these suffixes are stored "in LFS": sha256 in the metadata, resolve answers 302 to the CDN.
LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")
DEFAULT_VALID_TOKEN = "hf_valid_token"
DEFAULT_CREATED_AT = datetime(2024, 1, 15, 12, 0, 0, tzinfo=timezone.utc)
DEFAULT_LAST_MODIFIED = datetime(2024, 6, 1, 8, 30, 0, tzinfo=timezone.utc)
MAX_PAGE_SIZE = 1000  # the real Hub caps a page of /api/models at 1000 entries
TREE_PAGE_SIZE = 1000
TREE_EXPAND_PAGE_SIZE = 50
_CHUNK = 64 * 1024

# `sort` values accepted by GET /api/models. The 2.x client sends camelCase (`createdAt`, `lastModified`,
# `trendingScore`) and `likes` / `downloads` as-is; the snake_case spellings are accepted as well.
_SORT_KEYS: dict[str, Any] = {
    "likes": lambda r: r.likes,
    "downloads": lambda r: r.downloads,
    "downloadsAllTime": lambda r: r.downloads,
    "createdAt": lambda r: r.created_at.timestamp(),
    "created_at": lambda r: r.created_at.timestamp(),
    "lastModified": lambda r: r.last_modified.timestamp(),
    "last_modified": lambda r: r.last_modified.timestamp(),
    "trendingScore": lambda r: r.trending_score,
    "trending_score": lambda r: r.trending_score,
}


# --------------------------------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------------------------------


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _iso(dt: datetime) -> str:
    """The Hub's date format: ``2024-01-15T12:00:00.000Z``."""
    dt = _utc(dt)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _git_blob_oid(content: bytes) -> str:
    """Git's object id of a blob: sha1 over ``blob <size>\\0<content>``."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % len(content))
    h.update(content)
    return h.hexdigest()


def _render_readme(repo_id: str, card_data: dict) -> bytes:
    front = yaml.safe_dump(card_data, sort_keys=False, allow_unicode=True)
    name = repo_id.split("/")[-1]
    return f"---\n{front}---\n\n# {name}\n\nA model card served by the fake Hub.\n".encode()


def is_lfs_path(path: str) -> bool:
    return path.lower().endswith(LFS_SUFFIXES)


@dataclass
class FakeRepo:
    """A model repo registered on the fake Hub (see ``FakeHub.add_repo``)."""

    repo_id: str
    files: dict[str, bytes] = field(default_factory=dict)
    downloads: int = 0
    likes: int = 0
    tags: list[str] = field(default_factory=list)
    pipeline_tag: str | None = None
    library_name: str | None = None
    card_data: dict | None = None
    gated: bool | str = False  # False, "auto" or "manual" (True is read as "auto")
    # Tokens whose account accepted a gated repo's terms; None: every valid token. A valid token not in the set
    # gets the real Hub's 403 "GatedRepo" ("not in the authorized list") on the repo's files.
    access_tokens: set[str] | None = None
    private: bool = False
    created_at: datetime = DEFAULT_CREATED_AT
    last_modified: datetime = DEFAULT_LAST_MODIFIED
    trending_score: int = 0
    sha: str = ""  # commit hash (40 hex); derived from repo_id when empty
    gguf: dict | None = None  # optional `gguf` summary for model_info, e.g. {"total": ..., "architecture": ...}

    def __post_init__(self) -> None:
        parts = self.repo_id.split("/")
        if len(parts) > 2 or not all(parts):
            raise ValueError(f"invalid repo_id {self.repo_id!r}: expected 'author/name'")
        if self.gated is True:
            self.gated = "auto"
        if self.gated not in (False, "auto", "manual"):
            raise ValueError(f"gated must be False, 'auto' or 'manual', not {self.gated!r}")
        if not self.sha:
            self.sha = hashlib.sha1(f"fake-hub-commit:{self.repo_id}".encode()).hexdigest()
        if len(self.sha) != 40 or any(c not in "0123456789abcdef" for c in self.sha):
            raise ValueError(f"sha must be 40 lower-case hex digits, not {self.sha!r}")
        self.files = dict(self.files)
        for path, content in self.files.items():
            if not isinstance(content, (bytes, bytearray)):
                raise TypeError(f"content of {path!r} must be bytes")
        if "README.md" not in self.files and self.card_data:
            self.files["README.md"] = _render_readme(self.repo_id, self.card_data)
        self.tags = list(self.tags)
        self.created_at = _utc(self.created_at)
        self.last_modified = _utc(self.last_modified)

    @property
    def author(self) -> str | None:
        return self.repo_id.split("/")[0] if "/" in self.repo_id else None


@dataclass(frozen=True)
class FileMeta:
    """What the Hub knows about one file of a repo."""

    path: str
    size: int
    sha256: str
    blob_id: str  # git oid of the blob (of the LFS pointer file for LFS files)
    lfs: bool
    pointer_size: int  # size of the LFS pointer file (0 for regular git files)

    @property
    def etag(self) -> str:
        """The quoted ETag the Hub sends: the sha256 for LFS files, the git blob oid otherwise."""
        return f'"{self.sha256 if self.lfs else self.blob_id}"'


def _file_meta(path: str, content: bytes) -> FileMeta:
    sha256 = hashlib.sha256(content).hexdigest()
    if is_lfs_path(path):
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(content)}\n".encode()
        return FileMeta(path, len(content), sha256, _git_blob_oid(pointer), True, len(pointer))
    return FileMeta(path, len(content), sha256, _git_blob_oid(content), False, 0)


@dataclass
class RecordedRequest:
    """One request received by the fake Hub, on either listener."""

    method: str
    path: str  # URL path, percent-decoded
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    host: str  # "hub" or "cdn"
    raw_path: str = ""  # URL path as sent (percent-encoded)
    status: int | None = None  # status code answered (None until the status line is sent)
    time: float = 0.0  # time.monotonic() when received

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


class _Reply(Exception):
    """Raised by a route to answer with an error."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


# --------------------------------------------------------------------------------------------------------------------
# The Hub
# --------------------------------------------------------------------------------------------------------------------


class FakeHub:
    """A fake Hugging Face Hub on two local ports. Use ``start()``/``stop()`` or ``with FakeHub() as hub:``."""

    def __init__(self, valid_tokens: set[str] | None = None, page_size: int = MAX_PAGE_SIZE) -> None:
        self.valid_tokens: set[str] = set(valid_tokens) if valid_tokens is not None else {DEFAULT_VALID_TOKEN}
        #: Largest page of /api/models (and of a tree listing) served; lower it to force pagination in tests.
        self.page_size = page_size
        self.url = ""
        self.cdn_url = ""
        self._lock = threading.RLock()
        self._repos: dict[str, FakeRepo] = {}
        self._meta_cache: dict[tuple[str, str], tuple[bytes, FileMeta]] = {}
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()
        self._active_transfers = 0
        self.requests: list[RecordedRequest] = []
        self.max_concurrent_file_transfers = 0
        self.bytes_served: dict[str, int] = {}
        self.reset_faults()

    # ----- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        if self._servers:
            return self
        hub = _Server(self, "hub")
        cdn = _Server(self, "cdn")
        self._servers = [hub, cdn]
        self.url = f"http://127.0.0.1:{hub.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{cdn.server_address[1]}"
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.02}, name=f"fake-hub-{server.role}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.shutdown()
            server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # end keep-alive connections (and transfers) still open
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads = []

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- repos -----------------------------------------------------------------------------------------------------

    def add_repo(self, repo: FakeRepo) -> FakeRepo:
        """Register (or replace) a repo. Its ``files`` may be changed later through the returned object."""
        with self._lock:
            self._repos[repo.repo_id] = repo
        return repo

    def remove_repo(self, repo_id: str) -> None:
        with self._lock:
            self._repos.pop(repo_id, None)

    def clear(self) -> None:
        """Remove every repo."""
        with self._lock:
            self._repos.clear()
            self._meta_cache.clear()

    def get_repo(self, repo_id: str) -> FakeRepo | None:
        with self._lock:
            return self._repos.get(repo_id)

    @property
    def repos(self) -> list[FakeRepo]:
        with self._lock:
            return list(self._repos.values())

    def file_meta(self, repo_id: str, path: str) -> FileMeta:
        """Size, sha256, git blob id and LFS flag of a registered file (KeyError if unknown)."""
        repo = self.get_repo(repo_id)
        if repo is None:
            raise KeyError(repo_id)
        return self._meta(repo, path)

    def resolve_url(self, repo_id: str, path: str, revision: str = "main") -> str:
        """The ``resolve`` URL of a file, as ``hf_hub_url(..., endpoint=hub.url)`` builds it."""
        return f"{self.url}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def _meta(self, repo: FakeRepo, path: str) -> FileMeta:
        content = repo.files[path]
        key = (repo.repo_id, path)
        with self._lock:
            cached = self._meta_cache.get(key)
            if cached is not None and cached[0] is content:
                return cached[1]
        meta = _file_meta(path, content)
        with self._lock:
            self._meta_cache[key] = (content, meta)
        return meta

    def _all_meta(self, repo: FakeRepo) -> list[FileMeta]:
        return [self._meta(repo, p) for p in sorted(repo.files)]

    def _find_blob(self, sha256: str, repo_id: str | None, path: str | None) -> tuple[FakeRepo, FileMeta] | None:
        """Find the file behind a CDN URL: the (repo, path) hint of the URL first, then any file with that sha256."""
        if repo_id and path:
            repo = self.get_repo(repo_id)
            if repo is not None and path in repo.files:
                meta = self._meta(repo, path)
                if meta.sha256 == sha256:
                    return repo, meta
        for repo in self.repos:
            for p in list(repo.files):
                meta = self._meta(repo, p)
                if meta.lfs and meta.sha256 == sha256:
                    return repo, meta
        return None

    # ----- recording -------------------------------------------------------------------------------------------------

    def reset_requests(self) -> None:
        """Forget recorded requests and reset ``max_concurrent_file_transfers`` and ``bytes_served``."""
        with self._lock:
            self.requests = []
            self.max_concurrent_file_transfers = 0
            self.bytes_served = {}

    def api_request_count(self) -> int:
        return sum(1 for r in list(self.requests) if r.host == "hub" and r.path.startswith("/api/"))

    def requests_to(self, host: str) -> list[RecordedRequest]:
        """Recorded requests that reached one listener ("hub" or "cdn")."""
        return [r for r in list(self.requests) if r.host == host]

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    # ----- faults ----------------------------------------------------------------------------------------------------

    def reset_faults(self) -> None:
        with self._lock:
            self.throttle_bytes_per_second: int | None = None
            self.drop_after_bytes: int | None = None
            self.drop_times: int = 1
            self.corrupt_files: set[str] = set()
            self.api_status: int | None = None
            self.api_status_times: int | None = None  # None = every request
            self.file_status: int | None = None
            self.file_status_times: int | None = None  # None = every request
            self.retry_after: int = 7
            self.api_delay_seconds: float = 0
            self.ignore_ranges: bool = False  # answer every file request with the whole file, as some servers do

    def reset(self) -> None:
        """Back to a fresh hub: no repos, no faults, no recorded requests, default tokens and page size."""
        self.clear()
        self.reset_faults()
        self.reset_requests()
        self.valid_tokens = {DEFAULT_VALID_TOKEN}
        self.page_size = MAX_PAGE_SIZE

    def _take_status(self, kind: str) -> int | None:
        """The fault status to answer with for an `api` or `file` request, counting down `<kind>_status_times`."""
        with self._lock:
            status = getattr(self, f"{kind}_status")
            if status is None:
                return None
            times = getattr(self, f"{kind}_status_times")
            if times is None:
                return status
            if times <= 0:
                return None
            setattr(self, f"{kind}_status_times", times - 1)
            return status

    def _take_drop(self, body_len: int) -> int | None:
        with self._lock:
            limit = self.drop_after_bytes
            if limit is None or self.drop_times <= 0 or limit >= body_len:
                return None
            self.drop_times -= 1
            return max(0, limit)

    def _is_corrupt(self, repo_id: str, path: str) -> bool:
        corrupt = self.corrupt_files
        return path in corrupt or f"{repo_id}/{path}" in corrupt

    def _transfer_started(self) -> None:
        with self._lock:
            self._active_transfers += 1
            self.max_concurrent_file_transfers = max(self.max_concurrent_file_transfers, self._active_transfers)

    def _transfer_ended(self) -> None:
        with self._lock:
            self._active_transfers -= 1

    def _count_bytes(self, path: str, n: int) -> None:
        with self._lock:
            self.bytes_served[path] = self.bytes_served.get(path, 0) + n


# --------------------------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, hub: FakeHub, role: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub
        self.role = role

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-response is normal here (dropped connections, cancelled downloads).
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes", "on")


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = int(data["offset"])
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise _Reply(400, "Invalid cursor") from e
    if offset < 0:
        raise _Reply(400, "Invalid cursor")
    return offset


def _parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """(start, end) inclusive; None if unsatisfiable; "ignore" if not a single byte range we understand."""
    header = header.strip()
    if not header.lower().startswith("bytes=") or "," in header:
        return "ignore"
    spec = header[6:].strip()
    first, sep, last = spec.partition("-")
    if not sep:
        return "ignore"
    first, last = first.strip(), last.strip()
    try:
        if first == "":
            if last == "":
                return "ignore"
            n = int(last)
            if n <= 0 or size == 0:
                return None
            return max(0, size - n), size - 1
        start = int(first)
        end = int(last) if last else None
    except ValueError:
        return "ignore"
    if start < 0 or (end is not None and end < start):
        return "ignore"
    if start >= size:
        return None
    return start, size - 1 if end is None else min(end, size - 1)


def _etag_matches(if_range: str, etag: str) -> bool:
    def norm(v: str) -> str:
        v = v.strip()
        return v[2:] if v.startswith("W/") else v

    candidate = norm(if_range)
    return candidate == etag or candidate == etag.strip('"')


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    server: _Server

    # ----- plumbing --------------------------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr log
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            with self.hub._lock:
                self.hub._connections.discard(self.connection)

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    def send_response(self, code: int, message: str | None = None) -> None:
        record = getattr(self, "_record", None)
        if record is not None:
            record.status = code
        super().send_response(code, message)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _unsupported(self) -> None:
        self.close_connection = True  # we do not read request bodies: never reuse this connection
        self._dispatch(unsupported=True)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _unsupported

    def _dispatch(self, unsupported: bool = False) -> None:
        split = urlsplit(self.path)
        self._raw_path = split.path
        self._query = parse_qs(split.query, keep_blank_values=True)
        self._query_items = parse_qsl(split.query, keep_blank_values=True)
        self._headers = {k.lower(): v for k, v in self.headers.items()}
        self._record = RecordedRequest(
            method=self.command,
            path=unquote(split.path),
            query=self._query,
            headers=self._headers,
            host=self.server.role,
            raw_path=split.path,
            time=time.monotonic(),
        )
        self.hub._record(self._record)
        try:
            if unsupported:
                raise _Reply(405, f"Method {self.command} not allowed")
            if self.server.role == "cdn":
                self._route_cdn()
            else:
                self._route_hub()
        except _Reply as reply:
            self._send_error(reply)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as e:  # a bug in the fake: answer 500 so the test sees it, and say what it was
            self._send_error(_Reply(500, f"fake hub error: {type(e).__name__}: {e}"))
            raise

    def _q(self, name: str) -> str | None:
        values = self._query.get(name)
        return values[-1] if values else None

    def _token(self) -> str | None:
        auth = self._headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip() or None
        return None

    def _authorized(self) -> bool:
        token = self._token()
        return token is not None and token in self.hub.valid_tokens

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, data: Any, headers: dict[str, str] | None = None, status: int = 200) -> None:
        body = json.dumps(data).encode()
        self._send(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)

    def _send_error(self, reply: _Reply) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8", **reply.headers}
        if reply.code:
            headers["X-Error-Code"] = reply.code
            headers["X-Error-Message"] = reply.message
        if reply.status in (429, 503):
            retry_after = self.hub.retry_after
            headers.setdefault("Retry-After", str(retry_after))
            if reply.status == 429:
                headers.setdefault("RateLimit", f'"api";r=0;t={retry_after}')
                headers.setdefault("RateLimit-Policy", '"fixed window";"api";q=500;w=300')
        body = json.dumps({"error": reply.message}).encode()
        try:
            self._send(reply.status, headers, body)
        except OSError:
            self.close_connection = True

    # ----- access control --------------------------------------------------------------------------------------------

    def _repo_for(self, repo_id: str, *, files: bool) -> FakeRepo:
        """The repo if the caller may see it (and, with ``files``, read its files); else the Hub's error."""
        repo = self.hub.get_repo(repo_id)
        authorized = self._authorized()
        if repo is None or (repo.private and not authorized):
            status = 404 if self._token() else 401
            raise _Reply(status, "Repository not found", "RepoNotFound")
        if files and repo.gated and not authorized:
            raise _Reply(
                401,
                f"Access to model {repo_id} is restricted. You must have access to it and be authenticated to "
                "access it. Please log in.",
                "GatedRepo",
            )
        if files and repo.gated and repo.access_tokens is not None and self._token() not in repo.access_tokens:
            raise _Reply(
                403,
                f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                f"Visit {self.hub.url}/{repo_id} to ask for access.",
                "GatedRepo",
            )
        return repo

    @staticmethod
    def _commit_for(repo: FakeRepo, revision: str | None) -> str:
        if revision is None or revision in ("main", "refs/heads/main", repo.sha):
            return repo.sha
        raise _Reply(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _split_repo(self, segments: list[str]) -> tuple[str, list[str]]:
        """Split ``author/name/rest...`` (raw path segments) into the repo id and the rest."""
        decoded = [unquote(s) for s in segments]
        if len(decoded) >= 2 and self.hub.get_repo(f"{decoded[0]}/{decoded[1]}") is not None:
            return f"{decoded[0]}/{decoded[1]}", segments[2:]
        if decoded and self.hub.get_repo(decoded[0]) is not None:
            return decoded[0], segments[1:]
        if len(decoded) >= 2:
            return f"{decoded[0]}/{decoded[1]}", segments[2:]
        return (decoded[0] if decoded else ""), []

    # ----- routing ---------------------------------------------------------------------------------------------------

    def _route_hub(self) -> None:
        raw = self._raw_path
        if raw.startswith("/api/"):
            self._route_api(raw)
            return
        segments = raw.lstrip("/").split("/")
        for idx in (2, 1):
            if len(segments) > idx + 2 and segments[idx] == "resolve":
                repo_id = "/".join(unquote(s) for s in segments[:idx])
                revision = unquote(segments[idx + 1])
                path = unquote("/".join(segments[idx + 2 :]))
                self._resolve(repo_id, revision, path)
                return
        raise _Reply(404, "Not Found")

    def _route_api(self, raw: str) -> None:
        delay = self.hub.api_delay_seconds
        if delay:
            time.sleep(delay)
        status = self.hub._take_status("api")
        if status is not None:
            raise _Reply(status, f"Fake Hub error {status}")
        if self.command != "GET":
            raise _Reply(405, f"Method {self.command} not allowed")
        if raw.rstrip("/") == "/api/models":
            self._list_models()
            return
        if raw == "/api/whoami-v2":
            self._whoami()
            return
        if raw.startswith("/api/models/"):
            segments = raw[len("/api/models/") :].split("/")
            repo_id, rest = self._split_repo(segments)
            if not rest or rest == [""]:
                self._model_info(repo_id, None)
                return
            if rest[0] == "revision" and len(rest) >= 2:
                self._model_info(repo_id, unquote("/".join(rest[1:])))
                return
            if rest[0] == "tree" and len(rest) >= 2:
                self._tree(repo_id, unquote(rest[1]), unquote("/".join(rest[2:])).strip("/"))
                return
        raise _Reply(404, "Not Found")

    # ----- /api/whoami-v2 --------------------------------------------------------------------------------------------

    def _whoami(self) -> None:
        if not self._authorized():
            raise _Reply(401, "Invalid credentials in Authorization header")
        self._send_json(
            {
                "type": "user",
                "id": "000000000000000000000001",
                "name": "fake-user",
                "fullname": "Fake User",
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "read"}},
            }
        )

    # ----- model JSON ------------------------------------------------------------------------------------------------

    def _siblings(self, repo: FakeRepo, blobs: bool) -> list[dict]:
        siblings = []
        for meta in self.hub._all_meta(repo):
            item: dict[str, Any] = {"rfilename": meta.path}
            if blobs:
                item["size"] = meta.size
                item["blobId"] = meta.blob_id
                if meta.lfs:
                    item["lfs"] = {"sha256": meta.sha256, "size": meta.size, "pointerSize": meta.pointer_size}
            siblings.append(item)
        return siblings

    def _model_json(
        self,
        repo: FakeRepo,
        *,
        expand: list[str] | None,
        siblings: str | None,  # None, "names" or "blobs"
        card_data: bool,
        details: bool,  # model_info-only fields (usedStorage, spaces, gguf)
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.author,
            "sha": repo.sha,
            "lastModified": _iso(repo.last_modified),
            "createdAt": _iso(repo.created_at),
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": repo.downloads,
            "downloadsAllTime": repo.downloads,
            "likes": repo.likes,
            "trendingScore": repo.trending_score,
            "tags": list(repo.tags),
        }
        if repo.pipeline_tag is not None:
            data["pipeline_tag"] = repo.pipeline_tag
        if repo.library_name is not None:
            data["library_name"] = repo.library_name
        if expand is not None:
            picked = {k: data[k] for k in ("_id", "id")}
            for name in expand:
                if name in data:
                    picked[name] = data[name]
                elif name == "cardData" and repo.card_data is not None:
                    picked["cardData"] = repo.card_data
                elif name == "siblings":
                    picked["siblings"] = self._siblings(repo, blobs=False)
                elif name == "usedStorage":
                    picked["usedStorage"] = sum(m.size for m in self.hub._all_meta(repo))
                elif name == "gguf" and repo.gguf is not None:
                    picked["gguf"] = repo.gguf
                elif name == "spaces":
                    picked["spaces"] = []
            return picked
        if card_data and repo.card_data is not None:
            data["cardData"] = repo.card_data
        if siblings is not None:
            data["siblings"] = self._siblings(repo, blobs=siblings == "blobs")
        if details:
            data["spaces"] = []
            data["usedStorage"] = sum(m.size for m in self.hub._all_meta(repo))
            if repo.gguf is not None:
                data["gguf"] = repo.gguf
        return data

    def _expand_param(self) -> list[str] | None:
        values = self._query.get("expand", []) + self._query.get("expand[]", [])
        return values or None

    # ----- GET /api/models -------------------------------------------------------------------------------------------

    def _list_models(self) -> None:
        authorized = self._authorized()
        repos = [r for r in self.hub.repos if not r.private or authorized]

        search = self._q("search")
        if search:
            repos = [r for r in repos if search.lower() in r.repo_id.lower()]
        author = self._q("author")
        if author:
            repos = [r for r in repos if (r.author or "").lower() == author.lower()]
        for value in self._query.get("filter", []):
            repos = [r for r in repos if value in r.tags or value in (r.pipeline_tag, r.library_name)]
        pipeline_tag = self._q("pipeline_tag")
        if pipeline_tag:
            repos = [r for r in repos if r.pipeline_tag == pipeline_tag]
        gated = self._q("gated")
        if gated is not None:
            want = _truthy(gated)
            repos = [r for r in repos if bool(r.gated) == want]

        sort = self._q("sort") or "trendingScore"
        key = _SORT_KEYS.get(sort)
        if key is None:
            raise _Reply(400, f"Invalid sort parameter: {sort}")
        ascending = self._q("direction") == "1"
        repos.sort(key=key, reverse=not ascending)  # stable: ties keep registration order

        limit_raw = self._q("limit")
        page_size = max(1, min(self.hub.page_size, MAX_PAGE_SIZE))
        if limit_raw is not None:
            try:
                limit = int(limit_raw)
            except ValueError as e:
                raise _Reply(400, f"Invalid limit: {limit_raw}") from e
            if limit < 1:
                raise _Reply(400, f"Invalid limit: {limit_raw}")
            page_size = min(page_size, limit)
        cursor = self._q("cursor")
        offset = _decode_cursor(cursor) if cursor else 0
        page = repos[offset : offset + page_size]

        expand = self._expand_param()
        full = _truthy(self._q("full"))
        items = [
            self._model_json(
                r,
                expand=expand,
                siblings="names" if full else None,
                card_data=_truthy(self._q("cardData")),
                details=False,
            )
            for r in page
        ]
        headers = {}
        if offset + page_size < len(repos):
            headers["Link"] = f'<{self._next_url(offset + page_size)}>; rel="next"'
        self._send_json(items, headers)

    def _next_url(self, offset: int) -> str:
        items = [(k, v) for k, v in self._query_items if k != "cursor"]
        items.append(("cursor", _encode_cursor(offset)))
        return f"{self.hub.url}{self._raw_path}?{urlencode(items)}"

    # ----- GET /api/models/{repo_id}[/revision/{revision}] -----------------------------------------------------------

    def _model_info(self, repo_id: str, revision: str | None) -> None:
        repo = self._repo_for(repo_id, files=False)
        self._commit_for(repo, revision)
        expand = self._expand_param()
        data = self._model_json(
            repo,
            expand=expand,
            siblings="blobs" if _truthy(self._q("blobs")) else "names",
            card_data=True,
            details=True,
        )
        self._send_json(data)

    # ----- GET /api/models/{repo_id}/tree/{revision}[/{path}] --------------------------------------------------------

    def _tree(self, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo_for(repo_id, files=False)
        commit = self._commit_for(repo, revision)
        recursive = _truthy(self._q("recursive"))
        expand = _truthy(self._q("expand"))
        metas = self.hub._all_meta(repo)
        prefix = f"{path}/" if path else ""
        under = [m for m in metas if m.path.startswith(prefix)]
        if path and not under:
            raise _Reply(404, f"{path} does not exist on \"{revision}\"", "EntryNotFound", {"X-Repo-Commit": commit})

        directories: set[str] = set()
        for m in under:
            parts = m.path[len(prefix) :].split("/")[:-1]
            for i in range(1, len(parts) + 1):
                directories.add(prefix + "/".join(parts[:i]))
        if not recursive:
            directories = {d for d in directories if "/" not in d[len(prefix) :]}
            under = [m for m in under if "/" not in m.path[len(prefix) :]]

        last_commit = {"id": repo.sha, "title": "Upload folder using huggingface_hub", "date": _iso(repo.last_modified)}
        entries: list[dict[str, Any]] = []
        for d in sorted(directories):
            entry: dict[str, Any] = {
                "type": "directory",
                "oid": hashlib.sha1(f"tree:{repo.repo_id}:{d}".encode()).hexdigest(),
                "size": 0,
                "path": d,
            }
            if expand:
                entry["lastCommit"] = last_commit
            entries.append(entry)
        for m in under:
            entry = {"type": "file", "oid": m.blob_id, "size": m.size, "path": m.path}
            if m.lfs:
                entry["lfs"] = {"oid": m.sha256, "size": m.size, "pointerSize": m.pointer_size}
            if expand:
                entry["lastCommit"] = last_commit
                entry["securityFileStatus"] = {
                    "status": "safe",
                    "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": None,
                }
            entries.append(entry)
        if recursive:
            entries.sort(key=lambda e: e["path"])

        page_size = max(1, min(self.hub.page_size, TREE_EXPAND_PAGE_SIZE if expand else TREE_PAGE_SIZE))
        cursor = self._q("cursor")
        offset = _decode_cursor(cursor) if cursor else 0
        headers = {}
        if offset + page_size < len(entries):
            headers["Link"] = f'<{self._next_url(offset + page_size)}>; rel="next"'
        self._send_json(entries[offset : offset + page_size], headers)

    # ----- HEAD/GET /{repo_id}/resolve/{revision}/{path} -------------------------------------------------------------

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo_for(repo_id, files=True)
        commit = self._commit_for(repo, revision)
        if path not in repo.files:
            raise _Reply(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit})
        meta = self.hub._meta(repo, path)
        if self.command == "GET":
            status = self.hub._take_status("file")
            if status is not None:
                raise _Reply(status, f"Fake Hub error {status}")
        common = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes", "ETag": meta.etag}
        if meta.lfs:
            name = path.rsplit("/", 1)[-1]
            params = urlencode(
                {
                    "repo": repo.repo_id,
                    "path": path,
                    "response-content-disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";",
                    "Expires": "4102444800",
                    "Signature": hashlib.sha1(f"sig:{meta.sha256}".encode()).hexdigest(),
                }
            )
            location = f"{self.hub.cdn_url}/cdn/{meta.sha256}?{params}"
            body = f"Found. Redirecting to {location}".encode()
            headers = {
                **common,
                "X-Linked-Etag": f'"{meta.sha256}"',
                "X-Linked-Size": str(meta.size),
                "Location": location,
                "Content-Type": "text/plain; charset=utf-8",
            }
            self._send(302, headers, body)
            return
        self._serve_file(repo, meta, {"X-Repo-Commit": commit})

    # ----- CDN -------------------------------------------------------------------------------------------------------

    def _route_cdn(self) -> None:
        segments = self._raw_path.strip("/").split("/")
        if len(segments) != 2 or segments[0] != "cdn":
            raise _Reply(404, "Not Found")
        found = self.hub._find_blob(segments[1], self._q("repo"), self._q("path"))
        if found is None:
            raise _Reply(404, "NoSuchKey: the specified key does not exist")
        if self.command == "GET":
            status = self.hub._take_status("file")
            if status is not None:
                raise _Reply(status, f"Fake CDN error {status}")
        repo, meta = found
        name = meta.path.rsplit("/", 1)[-1]
        self._serve_file(
            repo,
            meta,
            {"Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"},
        )

    # ----- file bodies -----------------------------------------------------------------------------------------------

    def _serve_file(self, repo: FakeRepo, meta: FileMeta, extra: dict[str, str]) -> None:
        content = bytes(repo.files[meta.path])
        if self.hub._is_corrupt(repo.repo_id, meta.path) and content:
            mid = len(content) // 2
            content = content[:mid] + bytes([content[mid] ^ 0xFF]) + content[mid + 1 :]
        size = len(content)
        etag = f'"{meta.sha256}"' if meta.lfs else meta.etag
        headers = {
            **extra,
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Last-Modified": repo.last_modified.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        }
        status, start, end = 200, 0, size - 1
        range_header = self._headers.get("range")
        if_range = self._headers.get("if-range")
        if range_header and not self.hub.ignore_ranges and (if_range is None or _etag_matches(if_range, etag)):
            parsed = _parse_range(range_header, size)
            if parsed is None:
                raise _Reply(416, "Requested Range Not Satisfiable", headers={"Content-Range": f"bytes */{size}"})
            if parsed != "ignore":
                start, end = parsed  # type: ignore[misc]
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        body = memoryview(content)[start : end + 1]  # a view: a range of a 1 GB file is not copied
        headers["Content-Length"] = str(len(body))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD" or not body:
            return
        self._send_body(body, meta.path)

    def _send_body(self, body: bytes, path: str) -> None:
        hub = self.hub
        drop_at = hub._take_drop(len(body))
        to_send = memoryview(body)[:drop_at] if drop_at is not None else memoryview(body)
        hub._transfer_started()
        try:
            sent = 0
            clock = time.monotonic()  # when the next chunk may go out (throttling paces before each write)
            while sent < len(to_send):
                bps = hub.throttle_bytes_per_second
                size = max(1, min(_CHUNK, bps // 20)) if bps else _CHUNK
                chunk = to_send[sent : sent + size]
                now = time.monotonic()
                if bps:
                    clock = max(clock, now - 0.05)
                    if clock > now:
                        time.sleep(clock - now)
                    clock += len(chunk) / bps
                hub._count_bytes(path, len(chunk))  # before the write: the client may be done before we return
                self.wfile.write(chunk)
                sent += len(chunk)
            if drop_at is not None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        except OSError:
            self.close_connection = True  # the client went away
        finally:
            hub._transfer_ended()
