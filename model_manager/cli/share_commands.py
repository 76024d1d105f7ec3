"""Commands that share the library with other tools and folders: `export`, `unexport`, `rescan`."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from model_manager.cli.client import service_for
from model_manager.cli.library_commands import ModelArgument, resolve_model_id
from model_manager.cli.output import console

_PANEL = "Sharing"


class Target(str, Enum):
    ollama = "ollama"
    lmstudio = "lmstudio"
    hf_cache = "hf-cache"


def export(
    ctx: typer.Context,
    model: ModelArgument,
    to: Annotated[Target, typer.Option("--to", help="The tool that should see the model.")],
    name: Annotated[str | None, typer.Option("--name", help="Its name there (name:tag, publisher/repo, org/name).")] = None,
) -> None:
    """Show a library model to Ollama, LM Studio or the Hugging Face cache, through links: no copy."""
    out = console()
    with service_for(ctx) as api:
        model_id = resolve_model_id(api, model)
        body = {"target": to.value, **({"name": name} if name else {})}
        done = api.post(f"/local/models/{model_id}/exports", body)
    how = {"hardlink": "hard links", "symlink": "symlinks", "existing": "the tool's own copy"}[done["method"]]
    out.print(f"Exported to {to.value} as [bold]{done['name']}[/] ({how}, no copy)")
    for note in done.get("notes", []):
        out.print(f"  note: {note}", style="yellow", soft_wrap=True)
    command = done["details"].get("run") or done["details"].get("load")
    if command:
        out.print(f"  run: {command}", soft_wrap=True)


def unexport(
    ctx: typer.Context,
    model: ModelArgument,
    target: Annotated[Target, typer.Option("--from", help="The tool to take the model back from.")],
) -> None:
    """Remove a model's export: only the links and manifests the export made."""
    with service_for(ctx) as api:
        api.delete(f"/local/models/{resolve_model_id(api, model)}/exports/{target.value}")
    console().print(f"Removed the {target.value} export of {model}")


def rescan(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be registered.")] = False,
) -> None:
    """Register, where they lie, the GGUF models in the models folder that the library does not know yet."""
    out = console()
    with service_for(ctx) as api:
        result = api.post("/local/storage/rescan", params={"dry_run": str(dry_run).lower()})
    out.print(result["message"])
    for path in result.get("would_adopt") or [model["file_path"] for model in result["adopted"]]:
        out.print(f"  {path}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    for command in (export, unexport, rescan):
        app.command(rich_help_panel=_PANEL)(command)
