"""`discover` (and `import --link/--register`) against the live service, on a fake home of every tool."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.cli.conftest import RunCommand
from tests.conftest import make_settings
from tests.fake_tool_homes import build_homes, restore_permissions, use_homes
from tests.gguf_factory import write_gguf


@pytest.fixture
def homes(tmp_path, monkeypatch):
    built = build_homes(tmp_path)
    use_homes(monkeypatch, built)
    restore_permissions(built)  # root reads a mode-000 folder anyway: tests/core/test_discovery.py covers that
    shutil.rmtree(built.unreadable)
    return built


@pytest.fixture
def settings(tmp_path, homes):
    return make_settings(tmp_path, tmp_path, LIBRARY_SCAN_DIRS=str(homes.scan_dir))


def test_discover_lists_what_the_tools_hold(mm: RunCommand, homes):
    result = mm("discover", "--skipped")

    assert result.exit_code == 0, result.output
    for _tool, name in homes.expected:
        assert name in result.output
    assert f"{len(homes.expected)} model(s) found, {len(homes.expected)} not in the library yet" in result.output
    assert "dangling symbolic link" in result.output and "not valid JSON" in result.output


def test_discover_import_links_what_the_library_lacks_then_finds_nothing_to_do(mm: RunCommand, homes):
    first = mm("discover", "--import")
    assert first.exit_code == 0, first.output
    assert f"{len(homes.expected)} imported, 0 already there, 0 failed" in first.output

    again = mm("discover", "--import")
    assert again.exit_code == 0, again.output
    assert "Nothing to import." in again.output
    assert f"{len(homes.expected)} model(s) found, 0 not in the library yet" in again.output


def test_import_link_and_register_keep_the_file_in_place(mm: RunCommand, settings, tmp_path, homes):
    linked = write_gguf(tmp_path / "linked-Q4_0.gguf", name="Linked")
    kept = write_gguf(tmp_path / "kept-Q4_0.gguf", name="Kept")

    assert mm("import", str(linked), "--link").exit_code == 0
    assert mm("import", str(kept), "--register").exit_code == 0

    library = {entry.name: entry for entry in os.scandir(settings.models_dir)}
    assert library["linked-Q4_0.gguf"].inode() == os.stat(linked).st_ino
    assert "kept-Q4_0.gguf" not in library and kept.exists()
    refused = mm("import", str(linked), "--link", "--register")
    assert refused.exit_code == 1 and "choose one of" in refused.output
