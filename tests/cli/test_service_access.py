"""How commands find the service and its token: flags, environment, the saved token file; and their failures."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from model_manager.cli import app
from model_manager.core.config import Settings
from tests.cli.conftest import RunCommand
from tests.cli.fixtures import BASE_REPO
from tests.conftest import TEST_TOKEN, LiveServer, free_port


def test_a_wrong_token_prints_the_services_message_and_how_to_get_the_token(mm: RunCommand) -> None:
    result = mm("search", "tiny", env={"MODEL_MANAGER_API_TOKEN": "wrong-token"})
    assert result.exit_code == 1
    assert "Error: missing or invalid API token" in result.output
    assert "model-manager token" in result.output
    assert "Traceback" not in result.output


def test_flags_win_over_the_environment(mm: RunCommand, live_server: LiveServer) -> None:
    result = mm(
        "--url", live_server.url, "--token", TEST_TOKEN, "search", "tiny",
        env={"MODEL_MANAGER_URL": "http://127.0.0.1:9", "MODEL_MANAGER_API_TOKEN": "wrong"},
    )
    assert result.exit_code == 0, result.output
    assert BASE_REPO in result.output


def test_the_token_saved_by_the_service_is_used_when_none_is_given(mm: RunCommand, settings: Settings) -> None:
    settings.token_file.parent.mkdir(parents=True, exist_ok=True)
    settings.token_file.write_text(TEST_TOKEN + "\n")
    env = {"MODEL_MANAGER_API_TOKEN": None, "MODEL_MANAGER_DATA_DIR": str(settings.data_dir)}
    result = mm("search", "tiny", env=env)
    assert result.exit_code == 0, result.output
    assert BASE_REPO in result.output


def test_without_any_token_the_command_says_where_to_get_one(mm: RunCommand, tmp_path) -> None:
    result = mm("ls", env={"MODEL_MANAGER_API_TOKEN": None, "MODEL_MANAGER_DATA_DIR": str(tmp_path / "empty")})
    assert result.exit_code == 1
    assert "Error: no API token" in result.output


def test_an_unreachable_service_fails_with_a_hint_not_a_traceback(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["--url", url, "--token", "x", "ls"])
    assert result.exit_code == 1
    assert f"Error: cannot reach the service at {url}" in result.output
    assert "model-manager serve" in result.output
    assert "Traceback" not in result.output


def test_token_prints_the_saved_token(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "api_token").write_text("mm_saved\n")
    env = {"MODEL_MANAGER_DATA_DIR": str(tmp_path / "data"), "MODEL_MANAGER_API_TOKEN": None}
    result = CliRunner().invoke(app, ["token"], env=env)
    assert result.exit_code == 0
    assert result.stdout == "mm_saved\n"


def test_token_generates_and_saves_one_when_there_is_none(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"MODEL_MANAGER_DATA_DIR": str(tmp_path / "data"), "MODEL_MANAGER_API_TOKEN": None}
    result = CliRunner().invoke(app, ["token"], env=env)
    assert result.exit_code == 0
    token = result.stdout.strip()
    assert token.startswith("mm_")
    assert (tmp_path / "data" / "api_token").read_text().strip() == token
    assert "Generated a new API token" in result.stderr
