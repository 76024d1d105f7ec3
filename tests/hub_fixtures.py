"""Shared pieces of the Hub discovery tests: settings and clients pointed at the fake Hub, and its repos.

Import the fixtures into a test module with `from tests.hub_fixtures import *`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model_manager.app.main import create_app
from model_manager.core.config import Settings
from model_manager.core.services.huggingface_service import HuggingFaceService
from tests.conftest import TEST_TOKEN, make_settings
from tests.fake_hub.fixtures import fake_hub, hub_env
from tests.fake_hub.server import DEFAULT_VALID_TOKEN, FakeHub, FakeRepo

__all__ = [
    "BASE_MODEL",
    "DEFAULT_VALID_TOKEN",
    "SEARCH_REPOS",
    "add_provider_repos",
    "add_search_repos",
    "fake_hub",
    "hub_client_factory",
    "hub_env",
    "hub_service_factory",
    "hub_settings",
]

NOW = datetime.now(timezone.utc)


def _day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# A small Hub for search: every sort key and every filter separates these repos differently.
SEARCH_REPOS = [
    FakeRepo(
        "alpha/llama-chat-GGUF", pipeline_tag="text-generation", tags=["gguf", "chat", "license:apache-2.0"],
        downloads=5_000, likes=50, trending_score=30, created_at=_day("2024-03-01"), last_modified=_day("2024-09-01"),
        files={"llama-chat-Q4_K_M.gguf": b"q4"},
    ),
    FakeRepo(
        "beta/llama-base", pipeline_tag="text-generation", tags=["safetensors", "license:mit"],
        downloads=20_000, likes=10, trending_score=5, created_at=_day("2023-05-01"), last_modified=_day("2024-02-01"),
    ),
    FakeRepo(
        "gamma/whisper-small", pipeline_tag="automatic-speech-recognition", tags=["license:apache-2.0"],
        downloads=800, likes=300, trending_score=80, created_at=_day("2024-06-01"), last_modified=_day("2024-06-15"),
    ),
    FakeRepo(
        "delta/qwen-coder-GGUF", pipeline_tag="text-generation", tags=["gguf", "code", "license:apache-2.0"],
        downloads=1_200, likes=5, trending_score=12, created_at=_day("2024-08-01"), last_modified=_day("2024-10-01"),
        files={"qwen-coder-Q8_0.gguf": b"q8"},
    ),
    FakeRepo(
        "alpha/tiny-embed", pipeline_tag="feature-extraction", card_data={"license": "cc-by-4.0"},
        downloads=50, likes=2, trending_score=1, created_at=_day("2022-01-01"), last_modified=_day("2023-01-01"),
    ),
    FakeRepo(
        "epsilon/mistral-chat-GGUF", pipeline_tag="text-generation", tags=["gguf", "chat", "license:apache-2.0"],
        downloads=100_000, likes=1_000, trending_score=100, created_at=_day("2023-10-01"),
        last_modified=_day("2024-11-01"), files={"mistral-Q5_K_M.gguf": b"q5"},
    ),
]


def add_search_repos(hub: FakeHub) -> list[FakeRepo]:
    return [hub.add_repo(repo) for repo in SEARCH_REPOS]


BASE_MODEL = "meta/Llama-3-8B"


def add_provider_repos(hub: FakeHub) -> None:
    """A base model and the repos around it: four real GGUF providers (one gated) and three that are not."""
    relation = f"base_model:quantized:{BASE_MODEL}"
    hub.add_repo(
        FakeRepo(
            BASE_MODEL, pipeline_tag="text-generation", tags=["safetensors", "license:llama3"],
            card_data={"license": "llama3"}, files={"config.json": b"{}", "model.safetensors": b"weights"},
            downloads=1_000_000, likes=5_000,
        )
    )
    hub.add_repo(
        FakeRepo(
            "bartowski/Llama-3-8B-GGUF", tags=["gguf", relation], card_data={"base_model": BASE_MODEL},
            downloads=50_000, likes=200, last_modified=NOW - timedelta(days=10),
            files={  # the split parts registered out of order on purpose
                "Llama-3-8B-Q8_0/Llama-3-8B-Q8_0-00002-of-00002.gguf": b"8" * 300,
                "Llama-3-8B-Q8_0/Llama-3-8B-Q8_0-00001-of-00002.gguf": b"8" * 500,
                "Llama-3-8B-Q4_K_M.gguf": b"4" * 400,
                "Llama-3-8B-Q5_K_M.gguf": b"5" * 450,
                "Llama-3-8B-IQ2_XS.gguf": b"2" * 200,
                "mmproj-Llama-3-8B-F16.gguf": b"m" * 50,
            },
        )
    )
    hub.add_repo(
        FakeRepo(
            "unsloth/Llama-3-8B-GGUF", tags=["gguf", relation],  # the card does not name the base
            downloads=30_000, likes=150, last_modified=NOW - timedelta(days=30),
            files={"Llama-3-8B-Q2_K.gguf": b"2" * 150, "Llama-3-8B-Q4_K_M.gguf": b"4" * 400},
        )
    )
    hub.add_repo(
        FakeRepo(
            "someone/Llama-3-8B-Q4-GGUF", tags=["gguf", relation], card_data={"base_model": [BASE_MODEL]},
            downloads=500, likes=3, last_modified=NOW - timedelta(days=400),
            files={"llama-3-8b.Q4_K_M.gguf": b"4" * 400},
        )
    )
    hub.add_repo(
        FakeRepo(
            "gatedco/Llama-3-8B-GGUF", tags=["gguf", relation], card_data={"base_model": BASE_MODEL}, gated="manual",
            downloads=900_000, likes=4_000, last_modified=NOW - timedelta(days=1),
            files={"Llama-3-8B-Q6_K.gguf": b"6" * 420},
        )
    )
    # Not providers: a name that matches but quantizes another model, a card that names another base,
    # and a repo related to the base without any .gguf file.
    hub.add_repo(
        FakeRepo(
            "impostor/Llama-3-8B-GGUF", tags=["gguf", "base_model:quantized:other/Llama-3-8B-Remix"],
            card_data={"base_model": "other/Llama-3-8B-Remix"}, downloads=80_000, likes=900,
            files={"Llama-3-8B-Q4_K_M.gguf": b"x" * 400},
        )
    )
    hub.add_repo(
        FakeRepo(
            "mislabeled/Llama-3-8B-GGUF", tags=["gguf", relation], card_data={"base_model": "other/Model"},
            downloads=70_000, likes=10, files={"Llama-3-8B-Q4_K_M.gguf": b"x" * 400},
        )
    )
    hub.add_repo(
        FakeRepo(
            "nofiles/Llama-3-8B-GGUF", tags=["gguf", relation], card_data={"base_model": BASE_MODEL},
            downloads=60_000, likes=10, files={"README.md": b"# coming soon\n"},
        )
    )


def hub_settings(tmp_path: Path, hub: FakeHub, **overrides: str) -> Settings:
    """Settings for tests whose HF_ENDPOINT is the fake Hub (no HF_TOKEN unless given)."""
    import_dir = tmp_path / "incoming"
    import_dir.mkdir(exist_ok=True)
    values = {"HF_ENDPOINT": hub.url, "HUB_CACHE_TTL_SECONDS": "300", "HUB_TIMEOUT_SECONDS": "5", **overrides}
    return make_settings(tmp_path, import_dir, **values)


@pytest.fixture
def hub_service_factory(hub_env: FakeHub, tmp_path: Path) -> Callable[..., HuggingFaceService]:
    """Builds a HuggingFaceService on the fake Hub; keyword arguments override settings."""
    return lambda **overrides: HuggingFaceService(hub_settings(tmp_path, hub_env, **overrides))


@pytest.fixture
def hub_client_factory(hub_env: FakeHub, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Builds an authenticated TestClient of the app on the fake Hub; keyword arguments override settings."""
    clients: list[TestClient] = []

    def build(**overrides: str) -> TestClient:
        folder = tmp_path / f"app{len(clients)}"
        folder.mkdir()
        client = TestClient(create_app(hub_settings(folder, hub_env, **overrides)), raise_server_exceptions=False)
        client.__enter__()
        client.headers.update({"Authorization": f"Bearer {TEST_TOKEN}"})
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)
