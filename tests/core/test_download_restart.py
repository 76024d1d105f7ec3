"""A service killed with SIGKILL mid-download continues from its partial file when it starts again."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from tests.downloads.helpers import FILE, REPO, add_model_repo, gguf_bytes, wait_until_sync
from tests.downloads.service import ServiceProcess
from tests.fake_hub.fixtures import fake_hub  # noqa: F401 - fixture
from tests.gguf_factory import sha256_of

THROTTLE = 600_000  # bytes per second: the 3 MB file takes about 5 s


@pytest.fixture
def service(tmp_path, fake_hub):
    started = []

    def start() -> ServiceProcess:
        process = ServiceProcess(tmp_path, fake_hub.url).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def test_a_killed_service_resumes_from_the_partial_file(service, fake_hub, tmp_path):
    data = gguf_bytes(tmp_path, 3_000_000)
    add_model_repo(fake_hub, {FILE: data})
    fake_hub.throttle_bytes_per_second = THROTTLE
    first = service()
    with first.client() as client:
        download_id = client.post("/local/download", json={"repo_id": REPO, "filename": FILE}).json()["download_id"]
    state_file = tmp_path / "downloads" / download_id / "file-000.json"

    # Kill right after a checkpoint past 40%, as a crash at any moment would; read what survived on disk.
    wait_until_sync(lambda: _saved_bytes(state_file) > 0.4 * len(data), timeout=30, what="40% saved")
    first.kill()
    saved = _saved_bytes(state_file)
    time.sleep(0.3)  # let the fake Hub notice the dead connection
    served_before = fake_hub.bytes_served[FILE]
    assert saved < len(data)

    second = service()
    with second.client() as client:
        wait_until_sync(
            lambda: client.get(f"/local/downloads/{download_id}").json()["status"] == "completed", timeout=30,
            what="the resumed download to complete",
        )
        status = client.get(f"/local/downloads/{download_id}").json()

    assert status["sha256"] == hashlib.sha256(data).hexdigest() == sha256_of(status["local_file_path"])
    resumed = [r for r in fake_hub.requests_to("cdn") if r.headers.get("range")]
    assert resumed and resumed[-1].headers["range"] == f"bytes={saved}-{len(data) - 1}"
    assert fake_hub.bytes_served[FILE] - served_before == len(data) - saved
    # Fetched twice: what arrived between the saved checkpoint's snapshot and the kill (received bytes wait
    # up to 0.25 s to be written, and the checkpoint flushes them to disk before saving the state), plus
    # what the Hub had already pushed into the socket. About 0.15 s of transfer here: 3% of the file.
    assert saved >= 0.4 * len(data)
    assert fake_hub.bytes_served[FILE] < 1.1 * len(data)


def _saved_bytes(state_file: Path) -> int:
    try:
        return sum(part["completed"] for part in json.loads(state_file.read_text())["parts"])
    except (OSError, ValueError):
        return 0
