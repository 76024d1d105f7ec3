"""`import`, `ls`, `show`, `rm`, `stats` and `cleanup` against the live service."""

from __future__ import annotations

import os
import time
from pathlib import Path

from model_manager.core.config import Settings
from tests.cli.conftest import RunCommand
from tests.gguf_factory import write_gguf


def _import(mm: RunCommand, path: Path, *extra: str) -> str:
    """Import a file and return the new model's short id."""
    result = mm("import", str(path), *extra)
    assert result.exit_code == 0, result.output
    return result.output.split(" as ")[1].split()[0]


def test_an_empty_library_says_how_to_fill_it(mm: RunCommand) -> None:
    result = mm("ls")
    assert result.exit_code == 0
    assert "The library is empty" in result.output


def test_import_adds_a_file_that_ls_then_lists(mm: RunCommand, import_dir: Path) -> None:
    path = write_gguf(import_dir / "phi-mini-Q4_K_M.gguf", name="Phi Mini")
    result = mm("import", str(path), "--name", "Phi Mini")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Imported Phi Mini as ")
    listing = mm("ls")
    assert listing.exit_code == 0
    assert "Phi Mini" in listing.output and "Q4_K_M" in listing.output and "(imported)" in listing.output
    assert "1 model," in listing.output
    assert path.exists()  # copied, not moved


def test_importing_the_same_file_again_reports_the_existing_model(mm: RunCommand, import_dir: Path) -> None:
    path = write_gguf(import_dir / "same.gguf")
    first = _import(mm, path)
    again = mm("import", str(path))
    assert again.exit_code == 0
    assert again.output.startswith("Already in the library:")
    assert first in again.output


def test_import_with_move_takes_the_file_away(mm: RunCommand, import_dir: Path) -> None:
    path = write_gguf(import_dir / "moved.gguf")
    _import(mm, path, "--move")
    assert not path.exists()


def test_upload_sends_the_files_bytes(mm: RunCommand, tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "uploaded-Q8_0.gguf", file_type=7)  # outside the import folders: bytes only
    result = mm("import", str(path), "--upload", "--name", "Uploaded")
    assert result.exit_code == 0, result.output
    assert "Imported Uploaded" in result.output


def test_import_outside_the_allowed_folders_prints_the_services_refusal(mm: RunCommand, tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "outside.gguf")
    result = mm("import", str(path))
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "Traceback" not in result.output


def test_show_accepts_a_short_id_or_the_name_and_prints_the_header_facts(mm: RunCommand, import_dir: Path) -> None:
    short = _import(mm, write_gguf(import_dir / "shown.gguf", name="Shown", context_length=8192), "--name", "Shown")
    for reference in (short, "Shown"):
        result = mm("show", reference)
        assert result.exit_code == 0, result.output
        assert "Shown" in result.output and "SHA-256" in result.output
        assert "8192" in result.output  # context length from the GGUF header


def test_rm_deletes_the_model_and_its_file(mm: RunCommand, import_dir: Path, settings: Settings) -> None:
    short = _import(mm, write_gguf(import_dir / "doomed.gguf"))
    assert any(settings.models_dir.iterdir())
    result = mm("rm", short)
    assert result.exit_code == 0, result.output
    assert f"Deleted {short}" in result.output
    assert "The library is empty" in mm("ls").output
    assert not any(p.suffix == ".gguf" for p in settings.models_dir.rglob("*"))


def test_rm_of_an_unknown_model_prints_the_services_message(mm: RunCommand) -> None:
    result = mm("rm", "00000000-0000-0000-0000-000000000000")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "Traceback" not in result.output


def test_stats_shows_the_library_size_and_disk_usage(mm: RunCommand, import_dir: Path, settings: Settings) -> None:
    _import(mm, write_gguf(import_dir / "counted.gguf"))
    result = mm("stats")
    assert result.exit_code == 0, result.output
    assert "Models" in result.output and "1 (" in result.output
    assert "% used" in result.output and "free of" in result.output
    assert str(settings.models_dir.resolve())[:20] in result.output


def test_cleanup_dry_run_lists_stray_files_and_keeps_them(mm: RunCommand, settings: Settings) -> None:
    stray = settings.models_dir / "stray.gguf"
    stray.write_bytes(b"GGUF leftover")
    an_hour_ago = time.time() - 3600  # cleanup leaves a broken file alone while someone may still be writing it
    os.utime(stray, (an_hour_ago, an_hour_ago))
    result = mm("cleanup", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Would remove 1 item(s)" in result.output
    assert "stray.gguf" in result.output
    assert stray.exists()


def test_cleanup_removes_stray_files_after_confirmation(mm: RunCommand, settings: Settings) -> None:
    stray = settings.models_dir / "stray.gguf"
    stray.write_bytes(b"GGUF leftover")
    an_hour_ago = time.time() - 3600  # cleanup leaves a broken file alone while someone may still be writing it
    os.utime(stray, (an_hour_ago, an_hour_ago))
    refused = mm("cleanup", input="n\n")
    assert refused.exit_code == 1 and stray.exists()
    result = mm("cleanup", input="y\n")
    assert result.exit_code == 0, result.output
    assert not stray.exists()
    assert "Nothing to clean up." in mm("cleanup", "--yes").output
