"""`/local/download...` over real HTTP: the 202, the SSE stream parsed event by event, list, get and cancel."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time

import httpx
import pytest

from model_manager.app.routes import downloads as download_routes
from model_manager.core.services import disk
from tests.conftest import TEST_TOKEN, LiveServer
from tests.downloads.helpers import (
    FILE,
    REPO,
    add_model_repo,
    download_settings,
    gguf_bytes,
    parse_sse,
    partial_folders,
    statuses,
    terminal,
    wait_until_sync,
)
from tests.fake_hub.fixtures import fake_hub, hub_env  # noqa: F401 - fixtures
from tests.gguf_factory import sha256_of


@pytest.fixture
def server_for(hub_env, tmp_path):
    servers = []

    def start(**overrides) -> LiveServer:
        server = LiveServer(download_settings(tmp_path, hub_env, **overrides)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def read_stream(
    server: LiveServer, query: str = "", *, until=None, timeout: float = 30
) -> tuple[list[str], list[float]]:
    """Lines of `GET /local/download/status` with their arrival times, until the stream ends or `until(lines)`."""
    lines, times = [], []
    with server.client() as client:
        with client.stream("GET", f"/local/download/status{query}", timeout=timeout) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                lines.append(line)
                times.append(time.monotonic())
                if until is not None and until(lines):
                    break
    return lines, times


def start_download(server: LiveServer, **body) -> str:
    with server.client() as client:
        response = client.post("/local/download", json={"repo_id": REPO, "filename": FILE, **body})
    assert response.status_code == 202, response.text
    assert response.json()["message"]
    return response.json()["download_id"]


def test_a_download_streams_monotonic_progress_to_one_terminal_event(server_for, hub_env, tmp_path):
    data = gguf_bytes(tmp_path, 1_200_000)
    add_model_repo(hub_env, {FILE: data})
    hub_env.throttle_bytes_per_second = 400_000  # about 3 s
    server = server_for()
    download_id = start_download(server)

    lines, times = read_stream(server, f"?download_id={download_id}")

    events = parse_sse(lines)
    assert events and all(set(event) <= {"id", "data"} for event in events), "data: and id: only, no event: line"
    ids = [int(event["id"]) for event in events]
    assert ids == sorted(set(ids))
    states = statuses(events)
    assert {s["download_id"] for s in states} == {download_id}
    progress = [s["progress_percent"] for s in states]
    assert progress == sorted(progress) and [s["bytes_downloaded"] for s in states] == sorted(
        s["bytes_downloaded"] for s in states
    )
    assert terminal(states) == [states[-1]]
    last = states[-1]
    assert last["status"] == "completed" and last["progress_percent"] == 100.0 and last["model_id"]
    assert last["sha256"] == hashlib.sha256(data).hexdigest() == sha256_of(last["local_file_path"])
    transferring = [t for t, s in zip(_event_times(lines, times), states) if s["status"] == "downloading"]
    assert len(transferring) >= 3
    assert max(b - a for a, b in zip(transferring, transferring[1:])) < 1.2, "an event at least every second"
    assert any(s["download_speed_mbps"] for s in states if s["status"] == "downloading")
    with server.client() as client:
        assert download_id in [d["download_id"] for d in client.get("/local/downloads").json()]
        assert client.get(f"/local/downloads/{download_id}").json()["status"] == "completed"
        models = client.get("/local/models").json()
    assert [m["model_id"] for m in models] == [last["model_id"]]
    assert models[0]["is_downloaded"] and models[0]["original_repo_id"] == REPO


def _event_times(lines: list[str], times: list[float]) -> list[float]:
    """Arrival time of each event's data line."""
    return [at for line, at in zip(lines, times) if line.startswith("data:")]


def test_the_stream_starts_with_a_snapshot_and_sends_pings(server_for, hub_env, tmp_path, monkeypatch):
    add_model_repo(hub_env, {FILE: gguf_bytes(tmp_path, 20_000)})
    monkeypatch.setattr(download_routes, "PING_SECONDS", 0.2)
    server = server_for()
    download_id = start_download(server)
    with server.client() as client:
        wait_until_sync(lambda: client.get(f"/local/downloads/{download_id}").json()["status"] == "completed")

    lines, _ = read_stream(server, until=lambda lines: ": ping" in lines)

    assert [s["download_id"] for s in statuses(parse_sse(lines))] == [download_id]


def test_twenty_clients_get_the_end_even_with_one_that_never_reads(server_for, hub_env, tmp_path):
    add_model_repo(hub_env, {FILE: gguf_bytes(tmp_path, 1_000_000)})
    hub_env.throttle_bytes_per_second = 500_000
    server = server_for()
    download_id = start_download(server)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    stuck.connect(("127.0.0.1", server.port))
    stuck.sendall(
        f"GET /local/download/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\r\n".encode()
    )
    results: dict[int, list[dict]] = {}

    def follow(index: int) -> None:
        lines, _ = read_stream(server, f"?download_id={download_id}")
        results[index] = statuses(parse_sse(lines))

    readers = [threading.Thread(target=follow, args=(index,)) for index in range(19)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=40)
    stuck.close()

    assert len(results) == 19
    for states in results.values():
        assert [s["status"] for s in terminal(states)] == ["completed"]


def test_cancel_removes_the_partial_and_a_finished_download_cannot_be_cancelled(server_for, hub_env, tmp_path):
    files = {FILE: gguf_bytes(tmp_path, 1_000_000), "small.gguf": gguf_bytes(tmp_path, 10_000, "s.gguf")}
    add_model_repo(hub_env, files)
    hub_env.throttle_bytes_per_second = 200_000
    server = server_for()
    download_id = start_download(server)
    with server.client() as client:
        wait_until_sync(lambda: client.get(f"/local/downloads/{download_id}").json()["bytes_downloaded"] > 0)

        response = client.delete(f"/local/download/{download_id}")

        assert response.status_code == 200 and response.json() == {"message": "Download cancelled successfully"}
        assert client.get(f"/local/downloads/{download_id}").json()["status"] == "cancelled"
        assert partial_folders(server.settings) == []
        assert client.get("/local/models").json() == []

        hub_env.throttle_bytes_per_second = None
        finished = start_download(server, filename="small.gguf")
        wait_until_sync(lambda: client.get(f"/local/downloads/{finished}").json()["status"] == "completed")
        refused = client.delete(f"/local/download/{finished}")
        assert refused.status_code == 409 and refused.json()["error_code"] == "DOWNLOAD_FINISHED"
        unknown = client.delete("/local/download/no-such-download")
        assert unknown.status_code == 404 and unknown.json()["error_code"] == "DOWNLOAD_NOT_FOUND"


def test_request_errors_use_the_envelope(server_for, hub_env, tmp_path, monkeypatch):
    add_model_repo(hub_env, {FILE: gguf_bytes(tmp_path, 50_000)})
    add_model_repo(hub_env, {FILE: gguf_bytes(tmp_path, 50_000)}, repo_id="meta/Gated-GGUF", gated="manual")
    server = server_for()
    with server.client() as client:
        def post(**body) -> httpx.Response:
            return client.post("/local/download", json={"repo_id": REPO, **body})

        escaping = post(filename="../../etc/passwd.gguf")
        assert (escaping.status_code, escaping.json()["error_code"]) == (400, "INVALID_FILE")
        assert hub_env.requests == [], "refused before any Hub call"
        assert post(filename="missing.gguf").json()["error_code"] == "NOT_FOUND"
        assert post(filename="missing.gguf").status_code == 404
        gated = client.post("/local/download", json={"repo_id": "meta/Gated-GGUF", "filename": FILE})
        assert (gated.status_code, gated.json()["error_code"]) == (403, "GATED_REPO")
        monkeypatch.setattr(disk, "free_bytes", lambda path: 1000)
        full = post(filename=FILE)
        assert (full.status_code, full.json()["error_code"]) == (507, "INSUFFICIENT_STORAGE")
        assert post().status_code == 400
        unknown = client.get("/local/downloads/no-such-download")
        assert (unknown.status_code, unknown.json()["error_code"]) == (404, "DOWNLOAD_NOT_FOUND")
        stream = client.get("/local/download/status?download_id=no-such-download")
        assert (stream.status_code, stream.json()["error_code"]) == (404, "DOWNLOAD_NOT_FOUND")
        assert client.get("/local/downloads").json() == []
    assert set(json.loads(escaping.text)) == {"error_code", "message", "details", "timestamp", "detail"}


def test_status_streams_are_bounded_and_one_more_gets_a_503_envelope(server_for, hub_env, tmp_path, monkeypatch):
    from contextlib import ExitStack

    from model_manager.core.services import download_manager

    monkeypatch.setattr(download_manager, "MAX_STATUS_SUBSCRIBERS", 2)
    data = gguf_bytes(tmp_path, 50_000)
    add_model_repo(hub_env, {FILE: data})
    server = server_for()
    download_id = start_download(server)
    with server.client() as client, ExitStack() as streams:
        wait_until_sync(lambda: client.get(f"/local/downloads/{download_id}").json()["status"] == "completed")
        open_streams = []
        for _ in range(2):
            stream_client = streams.enter_context(server.client())
            response = streams.enter_context(stream_client.stream("GET", "/local/download/status"))
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))  # subscribed: the snapshot came
            open_streams.append((response, lines))  # dropping `lines` would close the response

        refused = client.get("/local/download/status", timeout=5)
        assert refused.status_code == 503
        assert refused.json()["error_code"] == "TOO_MANY_SUBSCRIBERS"
        assert refused.json()["details"] == {"max_subscribers": 2}

        open_streams[0][0].close()

        def another_stream_is_accepted() -> bool:
            with client.stream("GET", "/local/download/status") as response:
                return response.status_code == 200

        wait_until_sync(another_stream_is_accepted, what="a freed stream slot")
        # The refusal changed nothing: the download, its model and its bytes are as they were.
        assert [d["status"] for d in client.get("/local/downloads").json()] == ["completed"]
        models = client.get("/local/models").json()
        assert [m["file_hash"] for m in models] == [hashlib.sha256(data).hexdigest()]
        assert sha256_of(models[0]["file_path"]) == hashlib.sha256(data).hexdigest()
