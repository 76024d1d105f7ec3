"""The `model-manager` command line (placeholder: `serve` only, more commands are being written)."""

from __future__ import annotations

import typer

app = typer.Typer(help="model-manager: find, download and keep GGUF models.", no_args_is_help=True)


@app.command()
def serve(host: str | None = None, port: int | None = None) -> None:
    """Run the HTTP service."""
    import uvicorn

    from model_manager.core.config import get_settings

    settings = get_settings()
    uvicorn.run("model_manager.app.main:app", host=host or settings.host, port=port or settings.port, log_level="warning")


@app.command()
def version() -> None:
    """Print the version."""
    from model_manager import __version__

    typer.echo(__version__)


def main() -> None:
    app()
