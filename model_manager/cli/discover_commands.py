"""`discover`: the GGUF models Ollama, LM Studio, the Hugging Face cache, llama.cpp and LIBRARY_SCAN_DIRS hold,
and (with `--import`) bringing the ones the library lacks in, by link unless asked otherwise."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from model_manager.cli.client import CliError, service_for
from model_manager.cli.output import console, format_size, new_table, short_id

_PANEL = "Sharing"


def _library_cell(model: dict[str, Any]) -> str:
    if model["in_library"]:
        return f"yes ({short_id(model['library_model_id'])})"
    return "no" if not model.get("import_blocked") else "no (blocked)"


def discover(
    ctx: typer.Context,
    import_found: Annotated[
        bool, typer.Option("--import", help="Import every model found that the library lacks (by hard link).")
    ] = False,
    copy: Annotated[bool, typer.Option("--copy", help="With --import: copy the files instead of linking them.")] = False,
    register: Annotated[
        bool, typer.Option("--register", help="With --import: keep the files where they are (the library never deletes them).")
    ] = False,
    show_skipped: Annotated[bool, typer.Option("--skipped", help="Also list what was skipped, and why.")] = False,
) -> None:
    """List the GGUF models other tools already keep on the service's machine."""
    if copy and register:
        raise CliError("choose one of --copy and --register")
    if (copy or register) and not import_found:
        raise CliError("--copy and --register go with --import")
    out = console()
    with service_for(ctx) as api:
        with out.status("Looking in Ollama, LM Studio, the Hugging Face cache, llama.cpp and LIBRARY_SCAN_DIRS…"):
            found = api.get("/local/discover")
        models, skipped = found["models"], found["skipped"]
        if not models:
            searched = ", ".join(place["path"] for place in found["searched"])
            out.print(f"No GGUF models found (looked in {searched}).", soft_wrap=True)
        else:
            table = new_table("Tool", "~Name", "Quant", ">Size", "In library", "Link", "~Path")
            for model in models:
                table.add_row(
                    model["tool"],
                    f"[bold]{model['name']}[/]",
                    model.get("quantization") or "-",
                    format_size(model["size_bytes"]),
                    _library_cell(model),
                    "yes" if model["zero_copy"] else "no (copy)",
                    model["path"],
                )
            out.print(table)
            waiting = sum(not model["in_library"] for model in models)
            out.print(f"{len(models)} model(s) found, {waiting} not in the library yet", style="dim")
        if skipped:
            if show_skipped:
                for skip in skipped:
                    out.print(f"  skipped {skip['path']}: {skip['reason']}", style="yellow", soft_wrap=True)
            else:
                out.print(f"{len(skipped)} entries skipped (--skipped lists them)", style="dim")
        if import_found:
            _import(api, out, models, "copy" if copy else "register" if register else "link")


def _import(api, out, models: list[dict[str, Any]], action: str) -> None:
    wanted = [model["path"] for model in models if not model["in_library"] and not model.get("import_blocked")]
    if not wanted:
        out.print("Nothing to import.")
        return
    with out.status(f"Importing {len(wanted)} model(s) ({action})…"):
        done = api.post("/local/discover/import", {"paths": wanted, "action": action}, timeout=None)
    for item in done["results"]:
        if item["status"] == "failed":
            out.print(f"[red]failed[/] {item['path']}: {item['message']} ({item['error_code']})", soft_wrap=True)
        else:
            verb = "imported" if item["status"] == "imported" else "already in the library:"
            out.print(f"{verb} [bold]{item['model']['display_name']}[/] as {short_id(item['model']['model_id'])}")
    out.print(f"{done['imported']} imported, {done['already_in_library']} already there, {done['failed']} failed", style="dim")
    if done["failed"]:
        raise CliError(f"{done['failed']} model(s) could not be imported", exit_code=1)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=_PANEL)(discover)
