"""Prints the accuracy table of the fit estimate against llama.cpp at the end of the run."""

from __future__ import annotations

ACCURACY_ROWS: list[tuple[str, ...]] = []
COST_ROWS: list[tuple[str, ...]] = []


def _table(terminalreporter, title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:  # noqa: ANN001
    if not rows:
        return
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    terminalreporter.section(title)
    for row in [header, *rows]:
        terminalreporter.write_line("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's hook signature
    _table(terminalreporter, "fit estimate vs llama.cpp",
           ("model", "n_ctx", "part", "ours MiB", "llama.cpp MiB", "error"), ACCURACY_ROWS)
    _table(terminalreporter, "cold providers?fit=true: header reads per variant file",
           ("file", "ranged requests", "bytes served", "header bytes"), COST_ROWS)
