"""Prints the accuracy table of the fit estimate against llama.cpp at the end of the run."""

from __future__ import annotations

ACCURACY_ROWS: list[tuple[str, ...]] = []


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's hook signature
    if not ACCURACY_ROWS:
        return
    header = ("model", "n_ctx", "part", "ours MiB", "llama.cpp MiB", "error")
    widths = [max(len(str(row[i])) for row in [header, *ACCURACY_ROWS]) for i in range(len(header))]
    terminalreporter.section("fit estimate vs llama.cpp")
    for row in [header, *ACCURACY_ROWS]:
        terminalreporter.write_line("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
