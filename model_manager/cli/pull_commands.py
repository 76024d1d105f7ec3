"""Commands that download: `pull` (with a live progress bar fed by the SSE stream), `downloads`, `cancel`."""

from __future__ import annotations

import time
from typing import Annotated, Any

import click
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn

from model_manager.cli.client import ApiError, CliError, ServiceClient, expand_id, service_for
from model_manager.cli.hub_commands import model_path
from model_manager.cli.output import (
    console,
    format_duration,
    format_size,
    format_speed,
    new_table,
    short_id,
)
from model_manager.core.gguf_format import is_gguf_filename, is_mmproj, quantization_from_filename

_PANEL = "Downloads"
_TERMINAL = ("completed", "failed", "cancelled")
# Like `ollama pull`, a bare repo gets the usual trade-off between size and quality when it has one.
DEFAULT_QUANTIZATION = "Q4_K_M"
_HUB_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/")
_RECONNECTS = 5


def parse_model_reference(reference: str) -> tuple[str, str | None]:
    """`owner/name[:QUANT]` (optionally prefixed `hf.co/`) -> `(repo_id, quantization or None)`."""
    for prefix in _HUB_PREFIXES:
        if reference.startswith(prefix):
            reference = reference[len(prefix) :]
            break
    repo_id, _, quantization = reference.partition(":")
    if repo_id.count("/") != 1:
        raise CliError(f"'{reference}' is not a Hub repo id: expected OWNER/NAME or OWNER/NAME:QUANT")
    return repo_id, quantization.upper() or None


def _variants_in_repo(api: ServiceClient, repo_id: str) -> list[str]:
    """The quantization labels of the model files a repo holds (projector files left out), in file order."""
    model = api.get(model_path(repo_id))
    labels: list[str] = []
    for file in model.get("files") or []:
        name = file["filename"]
        label = quantization_from_filename(name) if is_gguf_filename(name) and not is_mmproj(name) else None
        if label and label not in labels:
            labels.append(label)
    return labels


def _pick_variant(repo_id: str, labels: list[str]) -> str:
    if DEFAULT_QUANTIZATION in labels:
        return DEFAULT_QUANTIZATION
    if len(labels) == 1:
        return labels[0]
    raise CliError(
        f"{repo_id} has several variants ({', '.join(labels)}) and no {DEFAULT_QUANTIZATION}",
        hint=f"Choose one, e.g. `model-manager pull {repo_id}:{labels[0]}`.",
    )


def choose_download(api: ServiceClient, repo_id: str) -> dict[str, Any]:
    """The download request for a bare repo id: its own GGUF variant, else the recommended provider's."""
    labels = _variants_in_repo(api, repo_id)
    if labels:
        return {"repo_id": repo_id, "quantization": _pick_variant(repo_id, labels)}
    found = api.get(model_path(repo_id) + "/gguf-providers")
    recommended = next((p for p in found if p.get("is_recommended")), None)
    if recommended is None:
        raise CliError(
            f"{repo_id} holds no GGUF files and no GGUF quantization of it was found on the Hub",
            hint=f"Look with `model-manager providers {repo_id}` or `model-manager search {repo_id.split('/')[-1]} --gguf`.",
        )
    provider_id = recommended["repo_id"]
    variant = _pick_variant(provider_id, list(recommended["model_variants"]))
    console().print(f"Using {variant} from the recommended provider [bold]{provider_id}[/]")
    return {"repo_id": provider_id, "quantization": variant}


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=40),
        TaskProgressColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[speed]}"),
        TextColumn("{task.fields[eta]}"),
        console=console(),
    )


def _show_status(progress: Progress, task_id: Any, status: dict[str, Any]) -> None:
    total = status.get("total_bytes")
    done = status.get("bytes_downloaded") or 0
    if status["status"] == "completed" and total:
        done = total
    state = status["status"]
    transferring = state == "downloading"
    progress.update(
        task_id,
        total=total,
        completed=done,
        description=f"{state:<11}",
        speed=format_speed(status.get("download_speed_mbps")) if transferring else "",
        eta=f"ETA {format_duration(status.get('eta_seconds'))}" if transferring else "",
    )


def follow_download(api: ServiceClient, download_id: str) -> dict[str, Any]:
    """Show a download's progress until it ends; returns its last status. Reconnects if the stream drops."""
    final: dict[str, Any] | None = None
    with _progress() as progress:
        task_id = progress.add_task("pending", total=None, speed="", eta="")
        for _attempt in range(_RECONNECTS):
            for status in api.events("/local/download/status", download_id=download_id):
                if status.get("download_id") != download_id:
                    continue
                _show_status(progress, task_id, status)
                if status["status"] in _TERMINAL:
                    final = status
                    break
            if final is None:
                # The stream ended without a final event: ask once, then listen again.
                status = api.get(f"/local/downloads/{download_id}")
                _show_status(progress, task_id, status)
                if status["status"] in _TERMINAL:
                    final = status
            if final is not None:
                break
            time.sleep(1)
    if final is None:
        raise CliError(f"lost track of download {download_id}", hint="Check it with `model-manager downloads`.")
    return final


def _ask_to_cancel(api: ServiceClient, download_id: str) -> None:
    out = console()
    try:
        cancel_it = typer.confirm("\nCancel the download? (no = leave it running in the service)", default=False)
    except (click.Abort, EOFError):
        cancel_it = False
    if not cancel_it:
        out.print(f"Left running as download {download_id}.")
        out.print(f"Follow it with `model-manager downloads`, stop it with `model-manager cancel {download_id}`.", style="dim")
        return
    try:
        api.delete(f"/local/download/{download_id}")
    except ApiError as error:
        if error.error_code != "DOWNLOAD_FINISHED":
            raise
        out.print("The download had already finished; nothing to cancel.")
        return
    out.print(f"Cancelled download {download_id}.")
    raise typer.Exit(130)


def pull(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="OWNER/NAME, OWNER/NAME:QUANT (e.g. :Q8_0), or hf.co/OWNER/NAME:QUANT.")],
    filename: Annotated[str | None, typer.Argument(help="Download exactly this file of the repo instead.")] = None,
    revision: Annotated[str, typer.Option(help="Branch, tag or commit on the Hub.")] = "main",
) -> None:
    """Download a model into the library, showing progress. Ctrl-C asks whether to cancel or leave it running.

    Without :QUANT, takes Q4_K_M (or the only variant) of the repo, or of its recommended GGUF provider.
    """
    repo_id, quantization = parse_model_reference(model)
    with service_for(ctx) as api:
        if filename:
            request: dict[str, Any] = {"repo_id": repo_id, "filename": filename}
        elif quantization:
            request = {"repo_id": repo_id, "quantization": quantization}
        else:
            request = choose_download(api, repo_id)
        request["revision"] = revision
        accepted = api.post("/local/download", request)
        download_id = accepted["download_id"]
        console().print(f"Pulling [bold]{request['repo_id']}[/] {filename or request.get('quantization')} (download {download_id})")
        projector_id = accepted.get("projector_download_id")
        if accepted.get("projector"):  # a vision model's projector comes along as its own download
            where = f"download {projector_id}" if projector_id else "already in the library"
            console().print(f"  with its projector {accepted['projector']} ({where})")
        projector_final = None
        try:
            final = follow_download(api, download_id)
            if projector_id and final["status"] == "completed":
                download_id = projector_id  # what Ctrl-C offers to cancel from now on
                projector_final = follow_download(api, projector_id)
        except KeyboardInterrupt:
            _ask_to_cancel(api, download_id)
            return
    if final["status"] == "failed":
        raise CliError(f"download failed: {final.get('error_message') or 'no reason given'}")
    if final["status"] == "cancelled":
        raise CliError("the download was cancelled")
    size = format_size(final.get("total_bytes") or final.get("bytes_downloaded"))
    console().print(f"[green]✓[/] Pulled {final['filename']} ({size}) as model {final.get('model_id')}")
    if final.get("local_file_path"):
        console().print(final["local_file_path"], style="dim", soft_wrap=True)
    if projector_final is not None and projector_final["status"] == "completed":
        console().print(f"[green]✓[/] Pulled its projector {projector_final['filename']} as model {projector_final.get('model_id')}")
    elif projector_final is not None:
        reason = projector_final.get("error_message") or projector_final["status"]
        raise CliError(f"the model is in the library, but its projector was not pulled: {reason}",
                       hint="Pull the same variant again to fetch the projector.")


def downloads(ctx: typer.Context) -> None:
    """List downloads: waiting, running and recently finished."""
    with service_for(ctx) as api:
        found = api.get("/local/downloads")
    out = console()
    if not found:
        out.print("No downloads.")
        return
    table = new_table("ID", "~Repo", "~File", "Status", ">Progress", ">Size", ">Speed", ">ETA")
    for status in found:
        running = status["status"] == "downloading"
        table.add_row(
            short_id(status["download_id"]),
            status["repo_id"],
            status["filename"],
            status["status"] + (f": {status['error_message']}" if status.get("error_message") else ""),
            f"{status.get('progress_percent') or 0:.0f}%",
            format_size(status.get("total_bytes")),
            format_speed(status.get("download_speed_mbps")) if running else "",
            format_duration(status.get("eta_seconds")) if running else "",
        )
    out.print(table)


def cancel(
    ctx: typer.Context,
    download_id: Annotated[str, typer.Argument(help="The download's id (or its first characters).")],
) -> None:
    """Cancel a download and remove its partial file."""
    with service_for(ctx) as api:
        full_id = expand_id(download_id, (status["download_id"] for status in api.get("/local/downloads")))
        api.delete(f"/local/download/{full_id}")
    console().print(f"Cancelled download {full_id}.")


def register(app: typer.Typer) -> None:
    for command in (pull, downloads, cancel):
        app.command(rich_help_panel=_PANEL)(command)
