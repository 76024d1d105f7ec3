"""Every setting of the service, read in this one place from the environment and `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _split_commas(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class Settings(BaseSettings):
    """Service settings. Names are the environment variables of API.md; extras are documented in README."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    api_token: str | None = Field(default=None, validation_alias="MODEL_MANAGER_API_TOKEN")
    host: str = Field(default="127.0.0.1", validation_alias="MODEL_MANAGER_HOST")
    port: int = Field(default=8000, validation_alias="MODEL_MANAGER_PORT")
    models_dir: Path = Field(default=Path("./models"), validation_alias="MODELS_DIR")
    downloads_dir: Path = Field(default=Path("./downloads"), validation_alias="DOWNLOADS_DIR")
    data_dir: Path = Field(default=Path("./data"), validation_alias="MODEL_MANAGER_DATA_DIR")
    max_concurrent_downloads: int = Field(default=3, ge=1, le=64, validation_alias="MAX_CONCURRENT_DOWNLOADS")
    hf_endpoint: str | None = Field(default=None, validation_alias="HF_ENDPOINT")
    hf_token: str | None = Field(default=None, validation_alias=AliasChoices("HF_TOKEN", "HUGGINGFACE_TOKEN"))
    import_allowed_dirs_raw: str = Field(default="", validation_alias="IMPORT_ALLOWED_DIRS")
    cors_origins_raw: str = Field(default="*", validation_alias="CORS_ORIGINS")
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")

    # (+) Extensions beyond API.md.
    hub_cache_ttl_seconds: float = Field(default=300.0, ge=0, validation_alias="HUB_CACHE_TTL_SECONDS")
    hub_timeout_seconds: float = Field(default=20.0, gt=0, validation_alias="HUB_TIMEOUT_SECONDS")
    download_connections: int = Field(default=8, ge=1, le=32, validation_alias="DOWNLOAD_CONNECTIONS")
    download_parallel_threshold_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, validation_alias="DOWNLOAD_PARALLEL_THRESHOLD_BYTES"
    )
    download_max_retries: int = Field(default=8, ge=0, validation_alias="DOWNLOAD_MAX_RETRIES")
    download_retry_base_seconds: float = Field(default=1.0, ge=0, validation_alias="DOWNLOAD_RETRY_BASE_SECONDS")
    # The machine that will run the models, when it is not this one (GiB; unset: detected here).
    fit_ram_gb: float | None = Field(default=None, ge=0, validation_alias="FIT_RAM_GB")
    fit_vram_gb: float | None = Field(default=None, ge=0, validation_alias="FIT_VRAM_GB")
    # Folders `GET /local/discover` also searches for GGUF models, besides the other tools' own places.
    library_scan_dirs_raw: str = Field(default="", validation_alias="LIBRARY_SCAN_DIRS")

    @field_validator("fit_ram_gb", "fit_vram_gb", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # env.template lists them empty: "FIT_RAM_GB=" means "detect", not a bad number.
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def import_allowed_dirs(self) -> list[Path]:
        """Folders imports may read from; empty means the user's home folder."""
        folders = _split_commas(self.import_allowed_dirs_raw) or [str(Path.home())]
        return [Path(p).expanduser() for p in folders]

    @property
    def library_scan_dirs(self) -> list[Path]:
        """Folders discover searches besides the other tools' places; empty means none."""
        return [Path(p).expanduser() for p in _split_commas(self.library_scan_dirs_raw)]

    @property
    def cors_origins(self) -> list[str]:
        return _split_commas(self.cors_origins_raw) or ["*"]

    @property
    def hub_endpoint(self) -> str:
        return (self.hf_endpoint or "https://huggingface.co").rstrip("/")

    @property
    def token_file(self) -> Path:
        return self.data_dir / "api_token"

    @property
    def catalogue_file(self) -> Path:
        return self.data_dir / "catalogue.sqlite3"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
