"""What `./start.sh` runs: make sure a token exists (print it once, when new), then serve."""

from __future__ import annotations

import sys

import uvicorn

from model_manager.core.config import get_settings
from model_manager.core.config.token import ensure_api_token


def main() -> None:
    settings = get_settings()
    token, created = ensure_api_token(settings)
    base = f"http://{settings.host}:{settings.port}"
    if created:
        print(f"model-manager: your API token (saved in {settings.token_file}, shown only this once):", file=sys.stderr)
        print(f"\n    {token}\n", file=sys.stderr)
    print(f"model-manager: serving on {base}  web page {base}/  API docs {base}/docs", file=sys.stderr)
    uvicorn.run("model_manager.app.main:app", host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
