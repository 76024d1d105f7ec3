"""Commands that look at the Hugging Face Hub through the service: `search`, `info`, `providers`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markdown import Markdown
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from model_manager.cli import fit_commands
from model_manager.cli.client import service_for
from model_manager.cli.output import console, format_count, format_date, format_size, new_table
from model_manager.core.models import HubSort

_PANEL = "Hugging Face Hub"


def model_path(repo_id: str) -> str:
    """The `/hub/model/{author}/{model_name}` path of a repo id."""
    return "/hub/model/" + repo_id.strip("/")


def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Words to look for; empty lists all models.")] = "",
    sort: Annotated[HubSort, typer.Option(help="Order, always descending.")] = HubSort.likes,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many results.")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many results (paging).")] = 0,
    gguf: Annotated[bool, typer.Option("--gguf", help="Only repos that hold GGUF files.")] = False,
    task: Annotated[str | None, typer.Option(help="Pipeline tag, e.g. text-generation.")] = None,
    license: Annotated[str | None, typer.Option(help="License id, e.g. apache-2.0.")] = None,
    author: Annotated[str | None, typer.Option(help="Only this user or organisation.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag every result must have (repeatable).")] = None,
    min_downloads: Annotated[int | None, typer.Option(min=0)] = None,
    min_likes: Annotated[int | None, typer.Option(min=0)] = None,
) -> None:
    """Search the Hub for models."""
    filters: dict[str, Any] = {
        "task": task,
        "license": license,
        "author": author,
        "tags": tag or None,
        "gguf": gguf or None,
        "min_downloads": min_downloads,
        "min_likes": min_likes,
    }
    filters = {key: value for key, value in filters.items() if value is not None}
    with service_for(ctx) as api:
        results = api.get(
            "/hub/search",
            query=query or None,
            sort=sort.value,
            limit=limit,
            offset=offset,
            filters_json=json.dumps(filters) if filters else None,
        )
    out = console()
    if not results:
        out.print("No models found.")
        return
    table = new_table("~Model", "Task", ">Downloads", ">Likes", "Updated")
    for model in results:
        table.add_row(
            f"[bold]{model['repo_id']}[/]",
            model.get("task") or "-",
            format_count(model.get("downloads")),
            format_count(model.get("likes")),
            format_date(model.get("last_modified")),
        )
    out.print(table)


def info(
    ctx: typer.Context,
    repo_id: Annotated[str, typer.Argument(help="The model's repo id, e.g. meta-llama/Llama-3.2-1B.")],
    readme: Annotated[bool, typer.Option("--readme", help="Also print the model card's text.")] = False,
) -> None:
    """Show a Hub model: its facts and files."""
    with service_for(ctx) as api:
        model = api.get(model_path(repo_id))
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    rows = [
        ("Author", model.get("author")),
        ("Task", model.get("task")),
        ("License", model.get("license")),
        ("Base model", model.get("base_model")),
        ("Downloads", format_count(model.get("downloads"))),
        ("Likes", format_count(model.get("likes"))),
        ("Updated", format_date(model.get("last_modified"))),
        ("Files", f"{model.get('file_count', 0)} ({format_size(model.get('total_size_bytes'))})"),
        ("Gated", "yes: needs HF_TOKEN with access" if model.get("gated") else None),
        ("Tags", ", ".join(model.get("tags") or []) or None),
    ]
    for label, value in rows:
        if value not in (None, ""):
            facts.add_row(label, str(value))
    out = console()
    out.print(Panel(facts, title=f"[bold]{model['repo_id']}[/]", title_align="left", expand=False))
    if model.get("description"):
        out.print(model["description"])
    files = [file for file in model.get("files") or [] if file["filename"].lower().endswith(".gguf")]
    if files:
        table = new_table("~GGUF file", ">Size")
        for file in files:
            table.add_row(file["filename"], format_size(file.get("size_bytes")))
        out.print(table)
    if readme and model.get("readme_content"):
        out.print(Markdown(model["readme_content"]))


def providers(
    ctx: typer.Context,
    repo_id: Annotated[str, typer.Argument(help="The base model's repo id, e.g. meta-llama/Llama-3.2-1B.")],
    fit: Annotated[bool, typer.Option("--fit", help="Add where each variant runs on the target machine (◆ best).")] = False,
    context: fit_commands.ContextOption = None,
    ram_gb: fit_commands.RamOption = None,
    vram_gb: fit_commands.VramOption = None,
) -> None:
    """List the GGUF quantizations of a model: who provides them, which variants, how big. ★ marks the recommended one.

    With --fit, a Fit column shows where each variant runs and ◆ marks each provider's best variant that fits."""
    params = {"fit": "true", "context": context, "ram_gb": ram_gb, "vram_gb": vram_gb} if fit else {}
    with service_for(ctx) as api:
        found = api.get(model_path(repo_id) + "/gguf-providers", **params)
    out = console()
    if not found:
        out.print(f"No GGUF providers found for {repo_id}.")
        return
    columns = [" ", "~Provider", "Variant", ">Size", ">Files", ">Downloads", ">Likes", "Updated"]
    table = new_table(*columns[:3], *(["Fit"] if fit else []), *columns[3:])
    for provider in found:
        variants = provider.get("variants") or [
            {"quantization": label, "size_bytes": None, "files": []} for label in provider["model_variants"]
        ]
        marker = "[bold green]★[/]" if provider.get("is_recommended") else ""
        name = provider["repo_id"] + (" [yellow](gated)[/]" if provider.get("gated") else "")
        if provider.get("downloadable") is False:  # the service's HF_TOKEN cannot download it; reasons[0] says why
            name += " [red](not downloadable)[/]"
        style = "green" if provider.get("is_recommended") else None
        for index, variant in enumerate(variants):
            first = index == 0
            label = escape(variant["quantization"])  # a label may be a file name holding "[...]"
            if fit and label == provider.get("recommended_variant"):
                label = f"{label} [bold cyan]◆[/]"
            table.add_row(
                marker if first else "",
                name if first else "",
                label,
                *([fit_commands.fit_badge(variant.get("fit"))] if fit else []),
                format_size(variant.get("size_bytes")),
                str(len(variant.get("files") or [])) or "-",
                format_count(provider.get("total_downloads")) if first else "",
                format_count(provider.get("likes")) if first else "",
                format_date(provider.get("last_updated")) if first else "",
                style=style,
                end_section=index == len(variants) - 1,
            )
    out.print(table)
    for provider in found:
        if provider.get("downloadable") is False and provider.get("reasons"):
            out.print(f"[red]✗[/] {provider['repo_id']}: {escape(provider['reasons'][0])}", soft_wrap=True)
    recommended = next((p for p in found if p.get("is_recommended")), None)
    if recommended:
        out.print(f"[green]★[/] recommended: [bold]{recommended['repo_id']}[/]")
        for reason in recommended.get("reasons") or []:
            out.print(f"  · {reason}", style="dim", soft_wrap=True)
        best = recommended.get("recommended_variant") if fit else None
        if fit:
            out.print(f"[bold cyan]◆[/] fits best here: [bold]{best}[/]" if best else "Nothing fits entirely here.")
        out.print(f"Pull one with: model-manager pull {recommended['repo_id']}:{best or '<VARIANT>'}", style="dim")


def register(app: typer.Typer) -> None:
    for command in (search, info, providers):
        app.command(rich_help_panel=_PANEL)(command)
