"""How the CLI writes: consoles, sizes, counts, dates and durations in the user's words."""

from __future__ import annotations

from datetime import datetime

from rich.console import Console
from rich.table import Table


def console() -> Console:
    """Standard output. Made per call so that a test runner's captured stream is the one written to."""
    return Console(highlight=False)


def error_console() -> Console:
    return Console(stderr=True, highlight=False)


def format_size(size_bytes: int | float | None) -> str:
    """Decimal units, as the Hub shows them: `4.92 GB`, `812 MB`, `3.1 kB`."""
    if size_bytes is None:
        return "?"
    size = float(size_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" or size >= 100 else f"{size:.1f} {unit}".replace(".0 ", " ")
        size /= 1000
    return f"{size:.1f} TB"


def format_count(count: int | None) -> str:
    """`1.2M`, `35.4k`, `812`."""
    if count is None:
        return "-"
    for threshold, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if abs(count) >= threshold:
            return f"{count / threshold:.1f}".rstrip("0").rstrip(".") + suffix
    return str(count)


def format_date(value: str | None) -> str:
    """The day of an ISO-8601 time, `2025-12-12`; `-` when unknown."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d")
    except ValueError:
        return value[:10]


def format_duration(seconds: float | None) -> str:
    """`0:42`, `12:05`, `1:02:03`; `-` when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_speed(megabits_per_second: float | None) -> str:
    """The service reports megabits/s; people read downloads in megabytes/s."""
    if megabits_per_second is None:
        return "-"
    return format_size(megabits_per_second * 1_000_000 / 8) + "/s"


def short_id(identifier: str) -> str:
    return identifier[:8]


def new_table(*columns: str) -> Table:
    """A table in the CLI's one style. A leading `>` marks a right-aligned number, a leading `~` a long name
    that may fold onto more lines when the terminal is narrow; other columns stay on one line."""
    table = Table(header_style="bold", box=None, pad_edge=False, padding=(0, 2, 0, 0))
    for column in columns:
        if column.startswith(">"):
            table.add_column(column[1:], justify="right", no_wrap=True)
        elif column.startswith("~"):
            table.add_column(column[1:], overflow="fold")
        else:
            table.add_column(column, no_wrap=True)
    return table
