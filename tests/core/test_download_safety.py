"""Issue 8, scenarios 9 and 10: a refusal never loses saved bytes, a cancel never leaves a model behind,
and what the queue keeps in memory is bounded. Every test checks bytes on disk and catalogue rows."""

from __future__ import annotations

import asyncio
import errno
import threading
from pathlib import Path

import pytest

from model_manager.core.errors import DownloadFinishedError, DownloadNotFoundError, InsufficientStorageError
from model_manager.core.models import DownloadRequest
from model_manager.core.services import disk, download_manager
from model_manager.core.services.downloads.partial import PartialFile, download_folder
from tests.downloads.helpers import (
    FILE,
    REPO,
    add_model_repo,
    enqueue,
    gguf_bytes,
    download_settings,
    partial_folders,
    running_manager,
    serve_model,
    served,
    wait_finished,
)
from tests.fake_hub.fixtures import fake_hub, hub_env  # noqa: F401 - fixtures
from tests.gguf_factory import sha256_of, sha256_of_bytes

pytestmark = pytest.mark.asyncio



def _fill_disk_half_way_through(monkeypatch, size: int) -> None:
    """Writes of the `size`-byte file fail with ENOSPC from its middle on (other files are written)."""
    real_write = PartialFile.write

    def write_until_full(self, view, offset):
        if self.size == size and offset >= size // 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, view, offset)

    monkeypatch.setattr(PartialFile, "write", write_until_full)
    return real_write


async def test_a_507_keeps_the_bytes_an_earlier_failed_attempt_saved(hub_env, tmp_path, monkeypatch):
    data, settings = serve_model(hub_env, tmp_path, 2_000_000)
    real_write = _fill_disk_half_way_through(monkeypatch, len(data))
    async with running_manager(settings) as (manager, catalogue, _):
        first = await enqueue(manager)
        failed = await wait_finished(manager, first)
        assert failed.status == "failed" and 0 < failed.bytes_downloaded < len(data)
        monkeypatch.setattr(PartialFile, "write", real_write)
        saved = download_folder(settings.downloads_dir, first) / "file-000.part"
        kept = saved.read_bytes()[: failed.bytes_downloaded]
        assert kept == data[: failed.bytes_downloaded]

        monkeypatch.setattr(disk, "free_bytes", lambda path: 0)
        with pytest.raises(InsufficientStorageError) as refused:
            await enqueue(manager)
        # The bytes already saved count: only the rest is needed. And they are still there, under the old id.
        assert refused.value.details["required_bytes"] <= len(data) - failed.bytes_downloaded
        assert partial_folders(settings) == [download_folder(settings.downloads_dir, first)]
        assert saved.read_bytes()[: failed.bytes_downloaded] == kept
        assert [row.download_id for row in catalogue.list_downloads()] == [first]
        assert catalogue.get_download(first).bytes_downloaded == failed.bytes_downloaded
        assert catalogue.list_models(include_pending=True) == []

        monkeypatch.undo()
        served_before = served(hub_env, FILE)
        second = await manager.enqueue(DownloadRequest(repo_id=REPO, filename=FILE))
        assert "continues" in second.message
        status = await wait_finished(manager, second.download_id)

        assert status.status == "completed", status.error_message
        assert sha256_of(status.local_file_path) == sha256_of_bytes(data)
        assert [model.file_hash for model in catalogue.list_models()] == [sha256_of_bytes(data)]
        assert hub_env.requests_to("cdn")[-1].headers["range"] == f"bytes={failed.bytes_downloaded}-{len(data) - 1}"
        assert served(hub_env, FILE) - served_before == len(data) - failed.bytes_downloaded
        assert partial_folders(settings) == []


def _block_in_thread(monkeypatch, target, name: str, when=lambda *args: True):
    """Make `target.name` (called in a worker thread) wait for `release` once `when(*args)`; `entered` tells."""
    entered, release = threading.Event(), threading.Event()
    real = getattr(target, name)

    def blocked(*args):
        if when(*args):
            entered.set()
            release.wait(20)
        return real(*args)

    monkeypatch.setattr(target, name, blocked)
    return entered, release


async def test_a_cancel_during_registration_waits_and_answers_download_finished(hub_env, tmp_path, monkeypatch):
    data, settings = serve_model(hub_env, tmp_path, 300_000)
    async with running_manager(settings) as (manager, catalogue, _):
        # The library registers the model in a thread that finishes even when its caller is cancelled.
        entered, release = _block_in_thread(monkeypatch, catalogue, "insert_model")
        download_id = await enqueue(manager)
        assert await asyncio.to_thread(entered.wait, 20), "registration never started"
        assert manager.get(download_id).status == "verifying"

        cancelling = asyncio.create_task(manager.cancel(download_id))
        await asyncio.sleep(0)  # the cancel runs up to its first wait: it has taken its decision
        release.set()
        with pytest.raises(DownloadFinishedError):
            await cancelling

        status = manager.get(download_id)
        assert status.status == "completed" and status.model_id
        assert catalogue.get_download(download_id).status == "completed"
        models = catalogue.list_models()
        assert [model.model_id for model in models] == [status.model_id]
        assert sha256_of(models[0].file_path) == sha256_of_bytes(data) == models[0].file_hash
    assert partial_folders(settings) == []


async def test_a_cancel_while_verifying_before_registration_wins_completely(hub_env, tmp_path, monkeypatch):
    data, settings = serve_model(hub_env, tmp_path, 300_000)
    async with running_manager(settings) as (manager, catalogue, _):
        entered, release = _block_in_thread(
            monkeypatch, catalogue, "save_download", when=lambda record: record.status == "verifying"
        )
        download_id = await enqueue(manager)
        assert await asyncio.to_thread(entered.wait, 20), "verification never started"

        cancelling = asyncio.create_task(manager.cancel(download_id))
        await asyncio.sleep(0)
        release.set()
        await cancelling

        status = manager.get(download_id)
        assert status.status == "cancelled" and status.model_id is None
        assert catalogue.get_download(download_id).status == "cancelled"
        assert catalogue.list_models(include_pending=True) == []
        assert list(Path(settings.models_dir).iterdir()) == []
    assert partial_folders(settings) == []
    assert served(hub_env, FILE) == len(data)


async def test_only_the_latest_finished_downloads_stay_in_memory(hub_env, tmp_path, monkeypatch):
    monkeypatch.setattr(download_manager, "FINISHED_KEPT_IN_MEMORY", 2)
    files = {f"Tiny-{n}-Q4_K_M.gguf": gguf_bytes(tmp_path, 60_000 + 10_000 * n, f"m{n}.gguf") for n in range(3)}
    big_name, big = "Tiny-big-Q4_K_M.gguf", gguf_bytes(tmp_path, 3_000_000, "big.gguf")
    add_model_repo(hub_env, {**files, big_name: big})
    settings = download_settings(tmp_path, hub_env)
    real_write = _fill_disk_half_way_through(monkeypatch, len(big))
    async with running_manager(settings) as (manager, catalogue, _):
        failed_id = await enqueue(manager, big_name)
        failed = await wait_finished(manager, failed_id)
        assert failed.status == "failed" and failed.bytes_downloaded > 0
        monkeypatch.setattr(PartialFile, "write", real_write)
        done = [await wait_finished(manager, await enqueue(manager, name)) for name in files]
        assert all(status.status == "completed" for status in done)

        # Memory: the latest two finished. The catalogue: all four rows, three models with their bytes.
        assert [status.download_id for status in manager.list()] == [s.download_id for s in done[-2:]]
        with pytest.raises(DownloadNotFoundError):
            manager.get(failed_id)
        assert len(catalogue.list_downloads()) == 4
        assert sorted(sha256_of(model.file_path) for model in catalogue.list_models()) == sorted(
            sha256_of_bytes(data) for data in files.values()
        )

        # The forgotten failed attempt's bytes are still found (in the catalogue) and resumed.
        again = await manager.enqueue(DownloadRequest(repo_id=REPO, filename=big_name))
        assert "continues" in again.message
        status = await wait_finished(manager, again.download_id)
        assert status.status == "completed" and sha256_of(status.local_file_path) == sha256_of_bytes(big)
        assert hub_env.requests_to("cdn")[-1].headers["range"] == f"bytes={failed.bytes_downloaded}-{len(big) - 1}"
    async with running_manager(settings) as (manager, catalogue, _):
        assert len(manager.list()) == 2 and len(catalogue.list_downloads()) == 5
    assert partial_folders(settings) == []


async def test_a_cancel_lost_on_the_way_never_marks_a_completed_download_cancelled(hub_env, tmp_path, monkeypatch):
    """If some await swallows the cancel (as asyncio.wait_for can on Python 3.11), the job runs on to a
    registered model; the cancel must then answer DOWNLOAD_FINISHED, not overwrite `completed`."""
    from model_manager.core.services.downloads.runner import JobRunner

    data, settings = serve_model(hub_env, tmp_path, 600_000, throttle=1_000_000)
    real_fetch = JobRunner._fetch_files
    fetching = asyncio.Event()

    async def fetch_swallowing_cancels(self, job):
        task = asyncio.ensure_future(real_fetch(self, job))
        fetching.set()
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                continue  # lost, as a cancel landing in the same loop iteration as a completion was

    monkeypatch.setattr(JobRunner, "_fetch_files", fetch_swallowing_cancels)
    async with running_manager(settings) as (manager, catalogue, _):
        download_id = await enqueue(manager)
        await fetching.wait()
        with pytest.raises(DownloadFinishedError):
            await manager.cancel(download_id)

        status = manager.get(download_id)
        assert status.status == "completed" and status.model_id
        assert catalogue.get_download(download_id).status == "completed"
        models = catalogue.list_models()
        assert [model.model_id for model in models] == [status.model_id]
        assert sha256_of(models[0].file_path) == sha256_of_bytes(data)
    assert partial_folders(settings) == []
