"""`export`, `unexport` and `rescan` against the live service, with the tools' folders in a test home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli.conftest import RunCommand
from tests.gguf_factory import sha256_of, write_gguf


@pytest.fixture
def tool_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "tool-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("OLLAMA_MODELS", str(home / "ollama"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    return home


def test_export_shows_the_model_to_ollama_and_unexport_takes_it_back(mm: RunCommand, import_dir: Path, tool_home: Path):
    path = write_gguf(import_dir / "tiny-Q4_K_M.gguf", name="Tiny")
    assert mm("import", str(path), "--name", "Tiny").exit_code == 0
    result = mm("export", "Tiny", "--to", "ollama")
    assert result.exit_code == 0, result.output
    assert "Exported to ollama as tiny:q4_k_m (hard links, no copy)" in result.output
    assert "ollama run tiny:q4_k_m" in result.output
    blob = tool_home / "ollama" / "blobs" / f"sha256-{sha256_of(path)}"
    assert blob.is_file()
    shown = mm("show", "Tiny")
    assert "In ollama" in shown.output and "llama-server -m" in shown.output
    assert mm("unexport", "Tiny", "--from", "ollama").exit_code == 0
    assert not blob.exists() and not (tool_home / "ollama" / "manifests" / "registry.ollama.ai").exists()


def test_rescan_registers_a_model_dropped_into_the_models_folder(mm: RunCommand, settings):
    dropped = write_gguf(Path(settings.models_dir) / "dropped.gguf", name="Dropped")
    dry = mm("rescan", "--dry-run")
    assert dry.exit_code == 0 and str(dropped) in dry.output and "Would register 1" in dry.output
    done = mm("rescan")
    assert done.exit_code == 0 and "Registered 1 model" in done.output
    assert "dropped" in mm("ls").output and os.path.exists(dropped)
