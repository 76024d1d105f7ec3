"""`search`, `info` and `providers` against the live service and the fake Hub."""

from __future__ import annotations

from tests.cli.conftest import RunCommand
from tests.cli.fixtures import BASE_REPO, GGUF_REPO, OTHER_REPO, Q4_FILE, Q8_FILE, SMALL_GGUF_REPO


def test_search_lists_matching_models_with_their_counts(mm: RunCommand) -> None:
    result = mm("search", "tiny", "--sort", "downloads")
    assert result.exit_code == 0, result.output
    assert BASE_REPO in result.output and GGUF_REPO in result.output
    assert OTHER_REPO not in result.output
    assert "52k" in result.output  # the base model's downloads
    assert result.output.index(BASE_REPO) < result.output.index(GGUF_REPO)  # most downloaded first


def test_search_filters_reach_the_service(mm: RunCommand) -> None:
    result = mm("search", "--gguf", "--author", "smallfry")
    assert result.exit_code == 0, result.output
    assert SMALL_GGUF_REPO in result.output
    assert GGUF_REPO not in result.output and BASE_REPO not in result.output


def test_search_without_results_says_so(mm: RunCommand) -> None:
    result = mm("search", "no-such-model-anywhere")
    assert result.exit_code == 0
    assert "No models found." in result.output


def test_info_shows_the_model_and_its_gguf_files_with_sizes(mm: RunCommand) -> None:
    result = mm("info", GGUF_REPO)
    assert result.exit_code == 0, result.output
    assert GGUF_REPO in result.output
    assert "apache-2.0" in result.output
    assert Q4_FILE in result.output and Q8_FILE in result.output
    assert " kB" in result.output


def test_providers_lists_variants_with_sizes_and_marks_the_recommended_one(mm: RunCommand) -> None:
    result = mm("providers", BASE_REPO)
    assert result.exit_code == 0, result.output
    assert GGUF_REPO in result.output and SMALL_GGUF_REPO in result.output
    assert "Q4_K_M" in result.output and "Q8_0" in result.output
    assert f"★ recommended: {GGUF_REPO}" in result.output
    recommended_row = next(line for line in result.output.splitlines() if GGUF_REPO in line)
    assert recommended_row.lstrip().startswith("★")


def test_providers_of_a_model_without_quantizations_says_so(mm: RunCommand) -> None:
    result = mm("providers", OTHER_REPO)
    assert result.exit_code == 0, result.output
    assert f"No GGUF providers found for {OTHER_REPO}." in result.output


def test_unknown_repo_prints_the_envelopes_message_and_exits_non_zero(mm: RunCommand) -> None:
    result = mm("info", "nobody/nothing")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "nobody/nothing" in result.output
    assert "Traceback" not in result.output
