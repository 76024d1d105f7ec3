"""A small Hub world for the CLI and page tests: one base model, two GGUF providers, one unrelated repo.

Used by tests/cli/conftest.py and tests/web/conftest.py: `settings` is overridden so that the shared
`live_server` fixture talks to the fake Hub.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from model_manager.core.config import Settings
from tests.conftest import make_settings
from tests.fake_hub.server import FakeHub, FakeRepo
from tests.gguf_factory import write_gguf

BASE_REPO = "acme/Tiny-Chat-1B"
GGUF_REPO = "quantfolk/Tiny-Chat-1B-GGUF"
SMALL_GGUF_REPO = "smallfry/Tiny-Chat-1B-GGUF"
OTHER_REPO = "vision-lab/Pixel-Classifier"
Q4_FILE = "Tiny-Chat-1B-Q4_K_M.gguf"
Q8_FILE = "Tiny-Chat-1B-Q8_0.gguf"
_FILE_TYPES = {"Q4_K_M": 15, "Q8_0": 7}


def gguf_bytes(folder: Path, filename: str, tensor_elements: int = 2048) -> bytes:
    """A real GGUF file of a few kB (8 kB of tensor data per 1024 elements)."""
    quantization = next(label for label in _FILE_TYPES if label in filename)
    path = write_gguf(folder / filename, name="Tiny Chat 1B", file_type=_FILE_TYPES[quantization], tensor_elements=tensor_elements)
    return path.read_bytes()


def add_tiny_models(hub: FakeHub, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    hub.add_repo(
        FakeRepo(
            BASE_REPO,
            files={"config.json": b"{}", "model.safetensors": b"\0" * 64},
            downloads=52_000,
            likes=310,
            tags=["text-generation", "safetensors", "en"],
            pipeline_tag="text-generation",
            card_data={"license": "apache-2.0", "language": ["en"]},
        )
    )
    for repo_id, files, downloads, likes in (
        (GGUF_REPO, {Q4_FILE: gguf_bytes(folder, Q4_FILE), Q8_FILE: gguf_bytes(folder, Q8_FILE, 4096)}, 18_400, 95),
        (SMALL_GGUF_REPO, {Q4_FILE: gguf_bytes(folder, Q4_FILE, 1024)}, 120, 2),
    ):
        hub.add_repo(
            FakeRepo(
                repo_id,
                files=files,
                downloads=downloads,
                likes=likes,
                tags=["gguf", "text-generation", f"base_model:quantized:{BASE_REPO}"],
                pipeline_tag="text-generation",
                card_data={"license": "apache-2.0", "base_model": BASE_REPO},
            )
        )
    hub.add_repo(
        FakeRepo(
            OTHER_REPO,
            files={"model.safetensors": b"\0" * 64},
            downloads=900,
            likes=7,
            tags=["image-classification"],
            pipeline_tag="image-classification",
            card_data={"license": "mit"},
        )
    )


@pytest.fixture
def tiny_hub(hub_env: FakeHub, tmp_path: Path) -> FakeHub:
    """The fake Hub holding the tiny models."""
    add_tiny_models(hub_env, tmp_path / "hub-files")
    return hub_env


@pytest.fixture
def settings(tmp_path: Path, import_dir: Path, tiny_hub: FakeHub) -> Settings:
    """The service's settings, pointed at the fake Hub; failed transfers are not retried (tests stay fast)."""
    return make_settings(
        tmp_path,
        import_dir,
        HF_ENDPOINT=tiny_hub.url,
        DOWNLOAD_MAX_RETRIES=0,
        DOWNLOAD_RETRY_BASE_SECONDS=0,
        HUB_CACHE_TTL_SECONDS=0,
    )
