"""Pytest fixtures for the fake Hugging Face Hub.

Wire them in with ``from tests.fake_hub.fixtures import *`` in ``tests/conftest.py``.

* ``fake_hub``: a started :class:`FakeHub` (fresh for each test; starting takes about a millisecond).
* ``hub_env``: ``fake_hub`` plus an environment pointing huggingface_hub at it (yields the hub).

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_OFFLINE``... once, at import time, into
``huggingface_hub.constants``. Setting the environment variables alone therefore does not reach a client that is
already imported, so ``hub_env`` also patches those constants for the duration of the test. Code under test should
still pass ``endpoint=`` (and ``cache_dir=``/``token=``) explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_hub.server import FakeHub

__all__ = ["fake_hub", "hub_env"]


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub()
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def hub_env(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    env = {
        "HF_ENDPOINT": fake_hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(hf_home),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in (
        "HF_TOKEN",
        "HUGGINGFACE_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_OIDC_RESOURCE",
        "TRANSFORMERS_OFFLINE",
    ):
        monkeypatch.delenv(name, raising=False)

    # The same settings, for an huggingface_hub that is already imported (it reads them at import time).
    from huggingface_hub import constants

    patched = {
        "ENDPOINT": fake_hub.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": fake_hub.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
    }
    for name, value in patched.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    yield fake_hub
