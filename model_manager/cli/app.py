"""The `model-manager` Typer app: global options, error reporting, and the commands that need no service."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.core import TyperGroup

from model_manager.cli import discover_commands, fit_commands, hub_commands, library_commands, pull_commands, share_commands
from model_manager.cli.client import CliError, ServiceAddress
from model_manager.cli.output import error_console


class _ReportingGroup(TyperGroup):
    """Shows a `CliError` as one red line (and a hint) on stderr and exits with its code, never a traceback."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except CliError as error:
            stderr = error_console()
            stderr.print(f"[bold red]Error:[/] {error.message}", markup=True, soft_wrap=True)
            if error.hint:
                stderr.print(error.hint, style="dim", soft_wrap=True)
            raise typer.Exit(error.exit_code) from None


app = typer.Typer(
    cls=_ReportingGroup,
    help="model-manager: find GGUF models on the Hugging Face Hub, download them, keep a local library.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global_options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="MODEL_MANAGER_URL",
            help="The service's URL. Default: http://MODEL_MANAGER_HOST:MODEL_MANAGER_PORT (127.0.0.1:8000).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="MODEL_MANAGER_API_TOKEN",
            help="The API token. Default: the one in .env, else the one the service saved in its data folder.",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.obj = ServiceAddress(url=url, token=token)


@app.command(rich_help_panel="Service")
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (MODEL_MANAGER_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (MODEL_MANAGER_PORT).")] = None,
) -> None:
    """Run the HTTP service (and the web page at /)."""
    import uvicorn

    from model_manager.core.config import get_settings

    settings = get_settings()
    uvicorn.run("model_manager.app.main:app", host=host or settings.host, port=port or settings.port, log_level="warning")


@app.command(rich_help_panel="Service")
def token() -> None:
    """Print the API token, creating and saving one if there is none yet.

    Only the token goes to stdout, for `export MODEL_MANAGER_API_TOKEN=$(model-manager token)`.
    """
    from model_manager.core.config import Settings
    from model_manager.core.config.token import ensure_api_token

    settings = Settings()
    value, created = ensure_api_token(settings)
    if created:
        error_console().print(f"Generated a new API token and saved it in {settings.token_file}", style="dim")
    typer.echo(value)


@app.command(rich_help_panel="Service")
def version() -> None:
    """Print the version."""
    from model_manager import __version__

    typer.echo(__version__)


hub_commands.register(app)
pull_commands.register(app)
library_commands.register(app)
share_commands.register(app)
discover_commands.register(app)
fit_commands.register(app)


def main() -> None:
    app()
