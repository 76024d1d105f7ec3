"""`hardware`, `fit` and `providers --fit` against the live service and the fake Hub's Llama 3.2 1B providers."""

from __future__ import annotations

import pytest

from tests.cli.conftest import RunCommand
from tests.fake_hub.server import FakeHub
from tests.fit.test_hub_fit import BASE, add_llama_providers

BARTOWSKI = "bartowski/Llama-3.2-1B-Instruct-GGUF"


@pytest.fixture
def llama_hub(tiny_hub: FakeHub) -> FakeHub:
    add_llama_providers(tiny_hub)
    return tiny_hub


def test_hardware_shows_the_machine_and_the_fit_target(mm: RunCommand) -> None:
    result = mm("hardware")
    assert result.exit_code == 0, result.output
    assert "This machine" in result.output and "available of" in result.output and "Fit target" in result.output


def test_fit_of_one_variant_shows_the_verdict_and_the_memory(mm: RunCommand, llama_hub: FakeHub) -> None:
    result = mm("fit", f"{BARTOWSKI}:Q6_K", "--vram-gb", "2", "--ram-gb", "16", "--context", "8192")
    assert result.exit_code == 0, result.output
    assert "Full GPU" in result.output and "16 of 16" in result.output
    assert "KV cache" in result.output and "0.25 GiB" in result.output  # 16 layers x 8 heads x 128 x 2 B x 8192


def test_fit_of_a_repo_lists_every_variant(mm: RunCommand, llama_hub: FakeHub) -> None:
    result = mm("fit", BARTOWSKI, "--vram-gb", "2", "--ram-gb", "16")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "Full GPU" in rows["Q6_K"] and "Partial" in rows["Q8_0"] and "Partial" in rows["F16"]


def test_providers_with_fit_marks_the_best_variant_that_fits(mm: RunCommand, llama_hub: FakeHub) -> None:
    result = mm("providers", BASE, "--fit", "--vram-gb", "2", "--ram-gb", "16")
    assert result.exit_code == 0, result.output
    assert "Fit" in result.output
    marked = [line for line in result.output.splitlines() if "◆" in line and "fits best" not in line]
    assert len(marked) == 3  # one per provider, but the split repo's only Q8_0 does not fit entirely
    assert any("Q6_K ◆" in line and "Full GPU" in line for line in marked)
    assert any("Q8_0" in line and "Partial 16/16" in line for line in result.output.splitlines())
    assert "◆ fits best here: Q6_K" in result.output
    assert f"★ recommended: {BARTOWSKI}" in result.output


def test_fit_of_an_unknown_variant_is_an_error(mm: RunCommand, llama_hub: FakeHub) -> None:
    result = mm("fit", f"{BARTOWSKI}:IQ1_S")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "IQ1_S" in result.output
