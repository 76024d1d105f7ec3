"""Shared fixtures: isolated settings and folders, the app in-process, a live server on loopback, the fake Hub."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from model_manager.app.main import create_app
from model_manager.core.config import Settings

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

TEST_TOKEN = "test-token-0123456789"


@pytest.fixture
def import_dir(tmp_path: Path) -> Path:
    """A folder that imports are allowed to read from."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(tmp_path: Path, import_dir: Path) -> Settings:
    return make_settings(tmp_path, import_dir)


def make_settings(tmp_path: Path, import_dir: Path, **overrides) -> Settings:
    values = dict(
        MODEL_MANAGER_API_TOKEN=TEST_TOKEN,
        MODELS_DIR=str(tmp_path / "models"),
        DOWNLOADS_DIR=str(tmp_path / "downloads"),
        MODEL_MANAGER_DATA_DIR=str(tmp_path / "data"),
        IMPORT_ALLOWED_DIRS=str(import_dir),
        LOG_LEVEL="WARNING",
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_TOKEN}"}


@pytest.fixture
def client(settings: Settings, auth: dict[str, str]) -> Iterator[TestClient]:
    """The app in-process (lifespan run), authenticated by default."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        test_client.headers.update(auth)
        yield test_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """The app served by uvicorn in a thread on 127.0.0.1, for streaming (SSE) and end-to-end tests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.server.started:
                return self
            time.sleep(0.02)
        raise RuntimeError("live server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=30, **kwargs)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(settings).start()
    yield server
    server.stop()


from tests.fake_hub.fixtures import *  # noqa: E402,F401,F403  (fake_hub, hub_env)
