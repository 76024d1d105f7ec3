"""`pull` (to completion, failing, interrupted), `downloads` and `cancel` against the live service and the fake Hub."""

from __future__ import annotations

import pytest

from model_manager.cli.client import ServiceClient
from model_manager.core.config import Settings
from tests.cli.conftest import RunCommand
from tests.cli.fixtures import BASE_REPO, GGUF_REPO, Q4_FILE, Q8_FILE
from tests.conftest import LiveServer
from tests.fake_hub.server import FakeHub, FakeRepo
from tests.gguf_factory import write_gguf, write_mmproj


def _model_files(settings: Settings) -> list[str]:
    return sorted(path.name for path in settings.models_dir.rglob("*.gguf"))


@pytest.fixture
def interrupt_after_first_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C, as the user presses it, right after the first progress event arrives."""
    events = ServiceClient.events

    def interrupted(self: ServiceClient, path: str, **params: object):
        for payload in events(self, path, **params):
            yield payload
            raise KeyboardInterrupt

    monkeypatch.setattr(ServiceClient, "events", interrupted)


def _download_id(output: str) -> str:
    return output.split("(download ")[1].split(")")[0]


def test_pull_of_a_variant_downloads_it_into_the_library(mm: RunCommand, settings: Settings) -> None:
    result = mm("pull", f"{GGUF_REPO}:Q4_K_M")
    assert result.exit_code == 0, result.output
    assert f"Pulling {GGUF_REPO} Q4_K_M" in result.output
    assert f"✓ Pulled {Q4_FILE}" in result.output
    assert "100%" in result.output
    assert _model_files(settings) == [Q4_FILE]
    listing = mm("ls")
    assert GGUF_REPO in listing.output and "Q4_K_M" in listing.output


def test_pull_of_one_file_downloads_exactly_that_file(mm: RunCommand, settings: Settings) -> None:
    result = mm("pull", GGUF_REPO, Q8_FILE)
    assert result.exit_code == 0, result.output
    assert f"✓ Pulled {Q8_FILE}" in result.output
    assert _model_files(settings) == [Q8_FILE]


def test_pull_of_a_gguf_repo_without_a_variant_takes_q4_k_m(mm: RunCommand, settings: Settings) -> None:
    result = mm("pull", f"hf.co/{GGUF_REPO}")
    assert result.exit_code == 0, result.output
    assert _model_files(settings) == [Q4_FILE]


def test_pull_of_a_base_model_takes_the_recommended_providers_variant(mm: RunCommand, settings: Settings) -> None:
    result = mm("pull", BASE_REPO)
    assert result.exit_code == 0, result.output
    assert f"Using Q4_K_M from the recommended provider {GGUF_REPO}" in result.output
    assert _model_files(settings) == [Q4_FILE]


def test_a_failed_pull_prints_why_and_exits_non_zero(mm: RunCommand, tiny_hub: FakeHub, settings: Settings) -> None:
    tiny_hub.corrupt_files.add(Q4_FILE)  # the bytes will not match the Hub's SHA-256
    result = mm("pull", f"{GGUF_REPO}:Q4_K_M")
    assert result.exit_code == 1
    assert "Error: download failed: " in result.output
    assert "Traceback" not in result.output
    assert _model_files(settings) == []


def test_pull_of_a_variant_the_repo_lacks_prints_the_services_message(mm: RunCommand) -> None:
    result = mm("pull", f"{GGUF_REPO}:Q2_K")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "Traceback" not in result.output


@pytest.mark.usefixtures("interrupt_after_first_event")
def test_ctrl_c_then_yes_cancels_the_download(mm: RunCommand, tiny_hub: FakeHub, live_server: LiveServer) -> None:
    tiny_hub.throttle_bytes_per_second = 2_000  # 17 kB: still running when the user answers
    result = mm("pull", f"{GGUF_REPO}:Q4_K_M", input="y\n")
    assert result.exit_code == 130, result.output
    assert "Cancel the download?" in result.output
    download_id = _download_id(result.output)
    assert f"Cancelled download {download_id}." in result.output
    with live_server.client() as client:
        assert client.get(f"/local/downloads/{download_id}").json()["status"] == "cancelled"


@pytest.mark.usefixtures("interrupt_after_first_event")
def test_ctrl_c_then_no_leaves_the_download_running(mm: RunCommand, tiny_hub: FakeHub, live_server: LiveServer) -> None:
    tiny_hub.throttle_bytes_per_second = 2_000
    result = mm("pull", f"{GGUF_REPO}:Q4_K_M", input="n\n")
    assert result.exit_code == 0, result.output
    download_id = _download_id(result.output)
    assert f"Left running as download {download_id}." in result.output
    with live_server.client() as client:
        assert client.get(f"/local/downloads/{download_id}").json()["status"] in ("pending", "downloading")

    listing = mm("downloads")
    assert listing.exit_code == 0
    assert download_id[:8] in listing.output and Q4_FILE in listing.output

    cancelled = mm("cancel", download_id[:8])
    assert cancelled.exit_code == 0, cancelled.output
    assert f"Cancelled download {download_id}." in cancelled.output


def test_pull_of_a_vision_variant_brings_its_projector_along(mm: RunCommand, tiny_hub: FakeHub, settings: Settings, tmp_path) -> None:
    made = tmp_path / "vision"
    made.mkdir()
    files = {
        "Tiny-VL-Q4_K_M.gguf": write_gguf(made / "model.gguf", name="Tiny VL").read_bytes(),
        "mmproj-Tiny-VL-f16.gguf": write_mmproj(made / "mmproj.gguf").read_bytes(),
    }
    tiny_hub.add_repo(FakeRepo("vision/Tiny-VL-GGUF", files=files, tags=["gguf"]))
    result = mm("pull", "vision/Tiny-VL-GGUF:Q4_K_M")
    assert result.exit_code == 0, result.output
    assert "with its projector mmproj-Tiny-VL-f16.gguf (download " in result.output
    assert "✓ Pulled its projector mmproj-Tiny-VL-f16.gguf as model " in result.output
    assert _model_files(settings) == sorted(files)
