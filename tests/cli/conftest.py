"""Fixtures for the CLI tests: the live service on the fake Hub, and `mm(...)` to run a command against it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from model_manager.cli import app
from tests.cli.fixtures import settings, tiny_hub  # noqa: F401 - fixtures
from tests.conftest import TEST_TOKEN, LiveServer
from tests.fake_hub.fixtures import fake_hub, hub_env  # noqa: F401 - fixtures

RunCommand = Callable[..., Result]


@pytest.fixture
def mm(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> RunCommand:
    """Run `model-manager ARGS...` in-process against the live service; returns click's `Result`."""
    # No `.env` of the developer's checkout may leak into the commands' settings.
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    base_env = {
        "MODEL_MANAGER_URL": live_server.url,
        "MODEL_MANAGER_API_TOKEN": TEST_TOKEN,
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }

    def run(*args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
        return CliRunner().invoke(app, list(args), input=input, env={**base_env, **(env or {})})

    return run
