"""Commands about "will it run here?": `hardware` and `fit`, and the badges `providers --fit` shows."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table

from model_manager.cli.client import CliError, service_for
from model_manager.cli.output import console, new_table
from model_manager.core.gguf_format import is_gguf_filename, is_mmproj, parse_split_name

_PANEL = "Will it run here?"
_BADGES = {"full_gpu": "[green]Full GPU[/]", "cpu": "[cyan]CPU[/]", "too_large": "[red]Too large[/]"}

ContextOption = Annotated[int | None, typer.Option(min=1, help="Context length in tokens (default 8192, or less).")]
RamOption = Annotated[float | None, typer.Option("--ram-gb", min=0, help="GiB of RAM of the target machine.")]
VramOption = Annotated[float | None, typer.Option("--vram-gb", min=0, help="GiB of free GPU memory there; 0: none.")]


def fit_badge(fit: dict[str, Any] | None) -> str:
    """`Full GPU`, `Partial 10/16`, `CPU`, `Too large`, or `?` when the fit is unknown (rich markup)."""
    if not fit:
        return "[dim]?[/]"
    if fit["fit"] == "partial_gpu":
        return f"[yellow]Partial {fit['gpu_layers']}/{fit['total_layers']}[/]"
    return _BADGES.get(fit["fit"], fit["fit"])


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024**3:.2f} GiB"


def hardware(ctx: typer.Context) -> None:
    """Show the service's machine (CPU, RAM, GPUs) and the target the fit estimates use."""
    with service_for(ctx) as api:
        info = api.get("/system/hardware")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    facts.add_row("CPU", f"{info['cpu_name']} ({info['cpu_cores']} cores, {info['cpu_threads']} threads)")
    facts.add_row("Features", ", ".join(info["cpu_features"]) or "-")
    facts.add_row("RAM", f"{_gib(info['ram_available_bytes'])} available of {_gib(info['ram_total_bytes'])}")
    if info["unified_memory"]:
        facts.add_row("Memory", "unified (the GPU shares the RAM)")
    target = info["fit_target"]
    gpus = ", ".join(_gib(free) for free in target["gpu_free_bytes"]) or "none"
    facts.add_row("Fit target", f"RAM {_gib(target['ram_bytes'])}, GPU free {gpus}")
    out = console()
    out.print(Panel(facts, title="[bold]This machine[/]", title_align="left", expand=False))
    if info["gpus"]:
        table = new_table("~GPU", "Vendor", "Backend", ">Free", ">Total")
        for gpu in info["gpus"]:
            table.add_row(gpu["name"], gpu["vendor"], gpu["backend"], _gib(gpu["memory_free_bytes"]),
                          _gib(gpu["memory_total_bytes"]))
        out.print(table)
    else:
        out.print("No GPU found: models run on the CPU.", style="dim")


def _variant_files(files: list[dict[str, Any]]) -> list[str]:
    """One file per model in a repo's listing: single files and the first part of split sets."""
    names = []
    for file in files:
        name = file["filename"]
        if not is_gguf_filename(name) or is_mmproj(name):
            continue
        split = parse_split_name(name.rsplit("/", 1)[-1])
        if split is None or split.index == 1:
            names.append(name)
    return names


def fit(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="REPO:QUANT (one variant) or REPO (every variant of that GGUF repo).")],
    context: ContextOption = None,
    ram_gb: RamOption = None,
    vram_gb: VramOption = None,
) -> None:
    """Will a GGUF of the Hub run on the target machine? Reads only its header, downloads nothing."""
    repo_id, _, quantization = target.partition(":")
    params = {"context": context, "ram_gb": ram_gb, "vram_gb": vram_gb}
    with service_for(ctx) as api:
        if quantization:
            _print_fit(api.get("/hub/fit", repo_id=repo_id, quantization=quantization, **params))
            return
        files = _variant_files(api.get("/hub/model/" + repo_id.strip("/")).get("files") or [])
        if not files:
            raise CliError(f"{repo_id} holds no GGUF model file")
        fits = [api.get("/hub/fit", repo_id=repo_id, filename=name, **params) for name in files]
    table = new_table("~Variant", "Fit", ">Total", ">Weights", ">KV cache", ">Compute", ">Max context on GPU")
    for result in sorted(fits, key=lambda r: r["memory"]["total_bytes"], reverse=True):
        memory = result["memory"]
        table.add_row(result["quantization"], fit_badge(result), _gib(memory["total_bytes"]),
                      _gib(memory["weights_bytes"]), _gib(memory["kv_cache_bytes"]), _gib(memory["compute_bytes"]),
                      str(result["max_context_full_gpu"] or "-"))
    out = console()
    out.print(table)
    out.print(f"at {fits[0]['context_length']} tokens", style="dim")


def _print_fit(result: dict[str, Any]) -> None:
    memory = result["memory"]
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    facts.add_row("Fit", fit_badge(result))
    facts.add_row("Layers on GPU", f"{result['gpu_layers']} of {result['total_layers']}")
    facts.add_row("Context", f"{result['context_length']} tokens")
    for label, key in (("Weights", "weights_bytes"), ("KV cache", "kv_cache_bytes"), ("Compute", "compute_bytes"),
                       ("Overhead", "overhead_bytes"), ("Total", "total_bytes")):
        facts.add_row(label, _gib(memory[key]))
    facts.add_row("Max context, all on GPU", str(result["max_context_full_gpu"] or "-"))
    facts.add_row("Max context in RAM", str(result["max_context_in_ram"] or "-"))
    out = console()
    title = f"[bold]{result['repo_id']}[/] {result['quantization']}"
    out.print(Panel(facts, title=title, title_align="left", expand=False))
    for reason in result["reasons"]:
        out.print(f"  · {reason}", style="dim", soft_wrap=True)


def register(app: typer.Typer) -> None:
    for command in (hardware, fit):
        app.command(rich_help_panel=_PANEL)(command)
