"""Settings: exactly the variables of API.md, from the environment and from `.env`."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_manager.core.config import Settings

API_MD_VARIABLES = {
    "MODEL_MANAGER_API_TOKEN": ("api_token", "tok-123", "tok-123"),
    "MODEL_MANAGER_HOST": ("host", "0.0.0.0", "0.0.0.0"),
    "MODEL_MANAGER_PORT": ("port", "9001", 9001),
    "MODELS_DIR": ("models_dir", "/srv/models", Path("/srv/models")),
    "DOWNLOADS_DIR": ("downloads_dir", "/srv/partial", Path("/srv/partial")),
    "MODEL_MANAGER_DATA_DIR": ("data_dir", "/srv/data", Path("/srv/data")),
    "MAX_CONCURRENT_DOWNLOADS": ("max_concurrent_downloads", "5", 5),
    "HF_ENDPOINT": ("hf_endpoint", "http://127.0.0.1:9", "http://127.0.0.1:9"),
    "HF_TOKEN": ("hf_token", "hf_abc", "hf_abc"),
    "IMPORT_ALLOWED_DIRS": ("import_allowed_dirs", "/a, /b", [Path("/a"), Path("/b")]),
    "CORS_ORIGINS": ("cors_origins", "http://x.test,http://y.test", ["http://x.test", "http://y.test"]),
    "LOG_LEVEL": ("log_level", "DEBUG", "DEBUG"),
}


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in [*API_MD_VARIABLES, "HUGGINGFACE_TOKEN"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return monkeypatch


@pytest.mark.parametrize("variable", sorted(API_MD_VARIABLES))
def test_each_api_md_variable_is_read_from_the_environment(clean_env, variable):
    attribute, raw, expected = API_MD_VARIABLES[variable]
    clean_env.setenv(variable, raw)

    assert getattr(Settings(), attribute) == expected


def test_defaults_are_those_of_api_md(clean_env):
    settings = Settings()

    assert (settings.host, settings.port, settings.max_concurrent_downloads) == ("127.0.0.1", 8000, 3)
    assert (settings.models_dir, settings.downloads_dir, settings.data_dir) == (
        Path("./models"), Path("./downloads"), Path("./data"),
    )
    assert settings.api_token is None and settings.hf_token is None
    assert settings.import_allowed_dirs == [Path.home()]
    assert settings.cors_origins == ["*"] and settings.log_level == "INFO"


def test_huggingface_token_is_an_alias_of_hf_token(clean_env):
    clean_env.setenv("HUGGINGFACE_TOKEN", "hf_alias")

    assert Settings().hf_token == "hf_alias"


def test_dot_env_file_is_read(clean_env, tmp_path):
    (tmp_path / ".env").write_text("MAX_CONCURRENT_DOWNLOADS=7\nMODELS_DIR=/from/dotenv\n")

    settings = Settings()

    assert settings.max_concurrent_downloads == 7 and settings.models_dir == Path("/from/dotenv")


def test_env_template_lists_every_setting():
    template = (Path(__file__).resolve().parents[2] / "env.template").read_text()
    names = {line.split("=", 1)[0].strip() for line in template.splitlines() if "=" in line and not line.startswith("#")}

    assert set(API_MD_VARIABLES) <= names
    aliases = {field.validation_alias for field in Settings.model_fields.values() if isinstance(field.validation_alias, str)}
    assert aliases <= names


def test_a_bad_value_is_refused(clean_env):
    clean_env.setenv("MAX_CONCURRENT_DOWNLOADS", "0")

    with pytest.raises(ValueError):
        Settings()
