"""Commands on the local library: `ls`, `show`, `rm`, `import`, `stats`, `cleanup`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table

from model_manager.cli.client import CliError, ServiceClient, expand_id, service_for
from model_manager.cli.output import console, format_date, format_size, new_table, short_id
from model_manager.core.models import LocalModelSort

_PANEL = "Local library"
ModelArgument = Annotated[str, typer.Argument(help="Model id (or its first characters), display name or repo id.")]


def resolve_model_id(api: ServiceClient, reference: str) -> str:
    """The id of the one library model that `reference` names by id, id prefix, display name, repo or file name."""
    models = api.get("/local/models")
    if any(model["model_id"] == reference for model in models):
        return reference
    named = [
        model
        for model in models
        if reference in (model["display_name"], model.get("original_repo_id"), Path(model["file_path"]).name)
    ]
    if len(named) > 1:
        ids = ", ".join(short_id(model["model_id"]) for model in named)
        raise CliError(f"'{reference}' names {len(named)} models ({ids}); use an id instead")
    if named:
        return named[0]["model_id"]
    return expand_id(reference, (model["model_id"] for model in models))


def _quantization(model: dict[str, Any]) -> str:
    return (model.get("metadata") or {}).get("quantization") or "-"


def ls(
    ctx: typer.Context,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Only names or repos containing this.")] = None,
    sort: Annotated[LocalModelSort | None, typer.Option(help="Order of the list.")] = None,
) -> None:
    """List the models in the local library."""
    with service_for(ctx) as api:
        models = api.get("/local/models", q=query, sort=sort.value if sort else None)
    out = console()
    if not models:
        out.print("The library is empty. Add a model with `model-manager pull` or `model-manager import`.")
        return
    table = new_table("ID", "~Name", "~Repo", "Quant", ">Size", "Added")
    for model in models:
        table.add_row(
            short_id(model["model_id"]),
            f"[bold]{model['display_name']}[/]",
            model.get("original_repo_id") or "(imported)",
            _quantization(model),
            format_size(model["file_size_bytes"]),
            format_date(model.get("imported_at")),
        )
    out.print(table)
    total = sum(model["file_size_bytes"] for model in models)
    out.print(f"{len(models)} model{'s' if len(models) != 1 else ''}, {format_size(total)}", style="dim")


def show(ctx: typer.Context, model: ModelArgument) -> None:
    """Show a library model: where it is, its hash and what its GGUF header says."""
    with service_for(ctx) as api:
        found = api.get(f"/local/models/{resolve_model_id(api, model)}")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim", no_wrap=True)
    facts.add_column(overflow="fold")
    facts.add_row("ID", found["model_id"])
    facts.add_row("Repo", found.get("original_repo_id") or "(imported)")
    facts.add_row("File", found["file_path"])
    facts.add_row("Size", format_size(found["file_size_bytes"]))
    facts.add_row("SHA-256", found["file_hash"])
    facts.add_row("Added", found.get("imported_at") or "-")
    facts.add_row("Last used", found.get("last_accessed") or "-")
    for key, value in (found.get("metadata") or {}).items():
        if value not in (None, "", [], {}):
            shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            facts.add_row(key.replace("_", " ").capitalize(), shown)
    for export in found.get("exports") or []:
        facts.add_row(f"In {export['target']}", export["name"])
    for tool, command in (found.get("run") or {}).items():
        facts.add_row(f"Run ({tool})", command)
    console().print(Panel(facts, title=f"[bold]{found['display_name']}[/]", title_align="left", expand=False))


def rm(
    ctx: typer.Context,
    models: Annotated[list[str], typer.Argument(help="Model ids (or their first characters), names or repo ids.")],
    force: Annotated[bool, typer.Option("--force", help="Delete even while a download or import writes it.")] = False,
) -> None:
    """Delete models from the library, files included."""
    out = console()
    with service_for(ctx) as api:
        for reference in models:
            model_id = resolve_model_id(api, reference)
            api.delete(f"/local/models/{model_id}", force=str(force).lower() if force else None)
            out.print(f"Deleted {reference} ({short_id(model_id)})")


def import_model(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A .gguf file (a path on the service's machine unless --upload).")],
    move: Annotated[bool, typer.Option("--move", help="Move the file into the library instead of copying it.")] = False,
    link: Annotated[bool, typer.Option("--link", help="Hard-link the file into the library: no copy (same filesystem).")] = False,
    register: Annotated[
        bool, typer.Option("--register", help="Keep the file where it is; deleting the model never deletes it.")
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="Display name (default: from the file).")] = None,
    upload: Annotated[bool, typer.Option("--upload", help="Send the file's bytes, for a service on another machine.")] = False,
) -> None:
    """Add a GGUF file from disk to the library (nothing is copied if the same file is already there)."""
    chosen = [action for action, wanted in (("move", move), ("link", link), ("register", register)) if wanted]
    if len(chosen) > 1 or (chosen and upload):
        raise CliError("choose one of --move, --link, --register and --upload")
    out = console()
    with service_for(ctx) as api:
        if upload:
            if not path.is_file():
                raise CliError(f"no such file: {path}")
            with path.open("rb") as handle, out.status(f"Uploading {path.name} ({format_size(path.stat().st_size)})…"):
                response = api.request(
                    "POST",
                    "/local/import/upload",
                    files={"file": (path.name, handle, "application/octet-stream")},
                    data={"display_name": name} if name else None,
                    timeout=None,
                )
        else:
            body = {"file_path": os.path.abspath(path), "action": chosen[0] if chosen else "copy", "display_name": name}
            with out.status(f"Importing {path.name}…"):
                response = api.request("POST", "/local/import", json={k: v for k, v in body.items() if v}, timeout=None)
    model = response.json()
    what = "Imported" if response.status_code == 201 else "Already in the library:"
    out.print(f"{what} [bold]{model['display_name']}[/] as {short_id(model['model_id'])} ({format_size(model['file_size_bytes'])})")


def stats(ctx: typer.Context) -> None:
    """Show how much space the library takes and how full the disk is."""
    with service_for(ctx) as api:
        found = api.get("/local/storage/stats")
    usage = float(found.get("usage_percent") or 0)
    color = "red" if usage >= 90 else "yellow" if usage >= 75 else "green"
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    grid.add_row("Models", f"{found['total_models']} ({format_size(found['total_size_bytes'])})")
    grid.add_row("Partial downloads", format_size(found.get("partial_downloads_bytes", 0)))
    grid.add_row("Orphaned files", str(found.get("orphaned_files", 0)))
    bar = ProgressBar(total=100, completed=usage, width=40, complete_style=color, finished_style=color)
    disk = Table.grid(padding=(0, 1))
    disk.add_row(bar, f"{usage:.1f}% used, {format_size(found['disk_free_bytes'])} free of {found['disk_total_gb']:.1f} GB")
    grid.add_row("Disk", disk)
    grid.add_row("Folder", found["storage_directory"])
    console().print(Panel(grid, title="[bold]Storage[/]", title_align="left", expand=False))


def cleanup(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before removing.")] = False,
) -> None:
    """Remove files no model owns, abandoned partial downloads, and entries whose files are gone."""
    out = console()
    with service_for(ctx) as api:
        preview = api.post("/local/storage/cleanup", params={"dry_run": "true"})
        if not preview["removed_files"] and not preview["removed_count"]:
            out.print("Nothing to clean up.")
            return
        verb = "Would remove" if dry_run else "Will remove"
        out.print(f"{verb} {preview['removed_count']} item(s), {format_size(preview.get('freed_bytes', 0))}:")
        for name in preview["removed_files"]:
            out.print(f"  {name}", soft_wrap=True)
        if dry_run:
            return
        if not yes and not typer.confirm("Remove them?", default=False):
            raise CliError("nothing removed", exit_code=1)
        done = api.post("/local/storage/cleanup", params={"dry_run": "false"})
    out.print(f"{done['message']} (freed {format_size(done.get('freed_bytes', 0))})")


def register(app: typer.Typer) -> None:
    for command in (ls, show, rm, stats, cleanup):
        app.command(rich_help_panel=_PANEL)(command)
    app.command("import", rich_help_panel=_PANEL)(import_model)
