"""Shared pieces of the download tests: GGUF payloads, a running download manager, SSE parsing, waiting."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from model_manager.core.catalogue import Catalogue
from model_manager.core.config import Settings
from model_manager.core.models import DownloadRequest, DownloadState, DownloadStatus
from model_manager.core.services.download_manager import DownloadManager
from model_manager.core.services.huggingface_service import HuggingFaceService
from model_manager.core.services.local_storage import LocalStorage
from tests.conftest import make_settings
from tests.fake_hub.server import FakeHub, FakeRepo
from tests.gguf_factory import write_gguf, write_split_model

REPO = "bartowski/Tiny-GGUF"
FILE = "Tiny-Q4_K_M.gguf"


def gguf_bytes(folder: Path, size: int, filename: str = "model.gguf", **kw) -> bytes:
    """A valid GGUF file of about `size` bytes (at least a few KB), as bytes. Same arguments, same bytes."""
    path = write_gguf(folder / filename, tensors=2, tensor_elements=max(64, size // 8), **kw)
    return path.read_bytes()


def split_gguf_bytes(folder: Path, stem: str, count: int, size_each: int) -> dict[str, bytes]:
    paths = write_split_model(folder, stem, count, tensors=2, tensor_elements=max(64, size_each // 8))
    return {path.name: path.read_bytes() for path in paths}


def add_model_repo(hub: FakeHub, files: dict[str, bytes], repo_id: str = REPO, **kw) -> FakeRepo:
    return hub.add_repo(FakeRepo(repo_id, files=files, tags=["gguf"], **kw))


def download_settings(tmp_path: Path, hub: FakeHub, **overrides) -> Settings:
    """Settings for a service using `hub`, with quick retries so fault tests stay short."""
    incoming = tmp_path / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    values = dict(HF_ENDPOINT=hub.url, DOWNLOAD_RETRY_BASE_SECONDS=0.02, HUB_CACHE_TTL_SECONDS=0)
    values.update(overrides)
    return make_settings(tmp_path, incoming, **values)


def serve_model(
    hub: FakeHub, tmp_path: Path, size: int, throttle: int | None = None, **overrides
) -> tuple[bytes, Settings]:
    """One GGUF file of about `size` bytes as `REPO/FILE` on `hub` (at `throttle` bytes/s), and settings for it."""
    data = gguf_bytes(tmp_path, size)
    add_model_repo(hub, {FILE: data})
    hub.throttle_bytes_per_second = throttle
    return data, download_settings(tmp_path, hub, **overrides)


@asynccontextmanager
async def running_manager(settings: Settings) -> AsyncIterator[tuple[DownloadManager, Catalogue, LocalStorage]]:
    """A started DownloadManager with the real catalogue, Hub service and library, as the app wires them."""
    for folder in (settings.models_dir, settings.downloads_dir, settings.data_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    catalogue = Catalogue(settings.catalogue_file)
    catalogue.open()
    storage = LocalStorage(settings, catalogue)
    manager = DownloadManager(settings, catalogue, HuggingFaceService(settings), storage)
    await manager.start()
    try:
        yield manager, catalogue, storage
    finally:
        await manager.stop()
        catalogue.close()


async def enqueue(manager: DownloadManager, filename: str = FILE, repo_id: str = REPO) -> str:
    """Request a download of one file; its id."""
    return (await manager.enqueue(DownloadRequest(repo_id=repo_id, filename=filename))).download_id


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_finished(manager: DownloadManager, download_id: str, timeout: float = 30.0) -> DownloadStatus:
    await wait_until(lambda: manager.get(download_id).status.is_terminal, timeout, f"download {download_id} to end")
    return manager.get(download_id)


def wait_until_sync(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def parse_sse(lines: list[str]) -> list[dict]:
    """Events of an SSE stream as dicts of field -> value (comments under ":"), blank-line separated."""
    events, current = [], {}
    for line in lines:
        if line == "":
            if current:
                events.append(current)
            current = {}
            continue
        if line.startswith(":"):
            current.setdefault(":", []).append(line[1:].strip())
            continue
        field, _, value = line.partition(":")
        current[field] = value[1:] if value.startswith(" ") else value
    if current:
        events.append(current)
    return events


def statuses(events: list[dict]) -> list[dict]:
    return [json.loads(event["data"]) for event in events if "data" in event]


def terminal(states: list[dict]) -> list[dict]:
    return [s for s in states if DownloadState(s["status"]).is_terminal]


def partial_folders(settings: Settings) -> list[Path]:
    return sorted(Path(settings.downloads_dir).iterdir()) if Path(settings.downloads_dir).exists() else []


def served(hub: FakeHub, filename: str) -> int:
    return hub.bytes_served.get(filename, 0)
