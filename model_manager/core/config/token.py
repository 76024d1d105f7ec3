"""The API token: from settings, or generated once and saved in the data folder."""

from __future__ import annotations

import os
import secrets

from model_manager.core.config.settings import Settings


def ensure_api_token(settings: Settings) -> tuple[str, bool]:
    """Return `(token, created)`. A configured token wins; else the saved one; else a new one is saved (mode 0600)."""
    if settings.api_token:
        return settings.api_token, False
    path = settings.token_file
    if path.exists():
        saved = path.read_text().strip()
        if saved:
            return saved, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "mm_" + secrets.token_urlsafe(32)
    # Create with 0600 from the start so the token is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token, True
