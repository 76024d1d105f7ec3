"""The download queue end to end against the fake Hub: bytes and hashes on disk, models in the library."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from model_manager.core.errors import GatedRepoError, InsufficientStorageError, InvalidFileError, NotFoundError
from model_manager.core.models import DownloadRequest
from model_manager.core.services import disk
from model_manager.core.services.downloads.partial import PartialFile
from tests.downloads.helpers import (
    FILE,
    REPO,
    add_model_repo,
    download_settings,
    enqueue,
    gguf_bytes,
    partial_folders,
    running_manager,
    serve_model,
    served,
    split_gguf_bytes,
    wait_finished,
    wait_until,
)
from tests.fake_hub.fixtures import fake_hub, hub_env  # noqa: F401 - fixtures
from tests.gguf_factory import sha256_of, sha256_of_bytes

pytestmark = pytest.mark.asyncio



async def test_a_download_lands_in_the_library_with_its_hash(hub_env, tmp_path):
    data, settings = serve_model(hub_env, tmp_path, 300_000)
    async with running_manager(settings) as (manager, catalogue, storage):
        accepted = await manager.enqueue(DownloadRequest(repo_id=REPO, filename=FILE))
        status = await wait_finished(manager, accepted.download_id)

        assert status.status == "completed", status.error_message
        assert status.model_id and status.sha256 == sha256_of_bytes(data)
        assert status.bytes_downloaded == status.total_bytes == len(data)
        assert status.progress_percent == 100.0
        path = Path(status.local_file_path)
        assert path.parent == Path(settings.models_dir) and path.name == FILE
        assert sha256_of(path) == sha256_of_bytes(data)
        model = catalogue.get_model(status.model_id)
        assert model.original_repo_id == REPO and model.is_downloaded and model.file_hash == sha256_of_bytes(data)
        assert partial_folders(settings) == []
        assert served(hub_env, FILE) == len(data)


async def test_a_dropped_connection_resumes_where_the_file_ends(hub_env, tmp_path):
    data = gguf_bytes(tmp_path, 2_000_000)
    add_model_repo(hub_env, {FILE: data})
    hub_env.drop_after_bytes, hub_env.drop_times = len(data) // 2, 1
    async with running_manager(download_settings(tmp_path, hub_env)) as (manager, _, _):
        status = await wait_finished(manager, await enqueue(manager))

    assert status.status == "completed", status.error_message
    assert sha256_of(status.local_file_path) == sha256_of_bytes(data)
    assert served(hub_env, FILE) - len(data) < 0.05 * len(data)
    ranged = [r for r in hub_env.requests_to("cdn") if "range" in r.headers]
    assert ranged, "the retry must ask for the rest of the file only"
    assert ranged[-1].headers["range"].startswith("bytes=") and ranged[-1].headers["if-range"] == f'"{sha256_of_bytes(data)}"'


async def test_a_server_error_is_retried(hub_env, tmp_path):
    data = gguf_bytes(tmp_path, 100_000)
    add_model_repo(hub_env, {FILE: data})
    hub_env.file_status, hub_env.file_status_times, hub_env.retry_after = 503, 2, 0
    async with running_manager(download_settings(tmp_path, hub_env)) as (manager, _, _):
        status = await wait_finished(manager, await enqueue(manager))
    assert status.status == "completed", status.error_message
    assert sha256_of(status.local_file_path) == sha256_of_bytes(data)


async def test_a_file_that_changes_upstream_mid_download_is_not_stitched_together(hub_env, tmp_path):
    old = gguf_bytes(tmp_path, 1_000_000, "old.gguf", name="Old")
    repo = add_model_repo(hub_env, {FILE: old})
    hub_env.throttle_bytes_per_second = 400_000
    hub_env.drop_after_bytes, hub_env.drop_times = len(old) // 2, 1  # the drop comes after the change
    settings = download_settings(tmp_path, hub_env)
    async with running_manager(settings) as (manager, catalogue, _):
        download_id = await enqueue(manager)
        await wait_until(lambda: manager.get(download_id).bytes_downloaded > 0, what="first bytes")
        repo.files[FILE] = gguf_bytes(tmp_path, 1_000_000, "new.gguf", name="New")
        status = await wait_finished(manager, download_id)

        assert status.status == "failed" and "changed on the Hub" in status.error_message
        assert catalogue.list_models() == []
    assert partial_folders(settings) == []
    resumed = [r for r in hub_env.requests_to("cdn") if "range" in r.headers]
    assert resumed and resumed[-1].headers["if-range"] == f'"{sha256_of_bytes(old)}"'


async def test_a_corrupted_file_is_rejected_and_nothing_is_kept(hub_env, tmp_path):
    data = gguf_bytes(tmp_path, 200_000)
    add_model_repo(hub_env, {FILE: data})
    hub_env.corrupt_files = {FILE}
    settings = download_settings(tmp_path, hub_env)
    async with running_manager(settings) as (manager, catalogue, _):
        status = await wait_finished(manager, await enqueue(manager))

        assert status.status == "failed"
        assert "SHA-256 mismatch" in status.error_message and sha256_of_bytes(data) in status.error_message
        assert status.model_id is None and catalogue.list_models(include_pending=True) == []
    assert partial_folders(settings) == []
    assert list(Path(settings.models_dir).iterdir()) == []


async def test_cancel_while_throttled_leaves_no_partial_and_no_model(hub_env, tmp_path):
    data, settings = serve_model(hub_env, tmp_path, 1_000_000, throttle=200_000)
    async with running_manager(settings) as (manager, catalogue, _):
        download_id = await enqueue(manager)
        await wait_until(lambda: manager.get(download_id).bytes_downloaded > 0, what="first bytes")
        assert partial_folders(settings) != []

        await manager.cancel(download_id)

        status = manager.get(download_id)
        assert status.status == "cancelled" and status.model_id is None
        assert partial_folders(settings) == []
        assert catalogue.list_models(include_pending=True) == []
        assert catalogue.get_download(download_id).status == "cancelled"
    assert served(hub_env, FILE) < len(data)


async def test_a_cancel_while_the_partial_file_is_being_opened_leaves_no_folder(hub_env, tmp_path, monkeypatch):
    """The cancel used to abandon the thread creating the partial folder, then remove the folder, which the
    thread created afterwards: a cancelled download left its folder behind (found by the stateful test)."""
    import threading
    import time

    from model_manager.core.services.downloads import partial

    opening = threading.Event()
    real_open = partial.PartialFile.open.__func__

    def slow_open(cls, *args, **kwargs):
        opening.set()
        time.sleep(0.5)  # the cancel arrives meanwhile
        return real_open(cls, *args, **kwargs)

    monkeypatch.setattr(partial.PartialFile, "open", classmethod(slow_open))
    _, settings = serve_model(hub_env, tmp_path, 300_000, throttle=100_000)
    async with running_manager(settings) as (manager, _, _):
        download_id = await enqueue(manager)
        await asyncio.to_thread(opening.wait, 10)
        await manager.cancel(download_id)
        assert manager.get(download_id).status == "cancelled"
        await asyncio.sleep(0.7)  # past the end of the open, had it been abandoned
        assert partial_folders(settings) == []


async def test_a_split_variant_becomes_one_model(hub_env, tmp_path):
    parts = split_gguf_bytes(tmp_path, "Tiny-Q8_0", 3, 150_000)
    other = gguf_bytes(tmp_path, 50_000, "Tiny-Q4_K_M.gguf")
    add_model_repo(hub_env, {**parts, "Tiny-Q4_K_M.gguf": other})
    settings = download_settings(tmp_path, hub_env)
    async with running_manager(settings) as (manager, catalogue, _):
        accepted = await manager.enqueue(DownloadRequest(repo_id=REPO, quantization="Q8_0"))
        status = await wait_finished(manager, accepted.download_id)

        assert status.status == "completed", status.error_message
        assert status.files == sorted(parts) and status.total_bytes == sum(map(len, parts.values()))
        models = catalogue.list_models()
        assert len(models) == 1 and models[0].model_id == status.model_id
        on_disk = {Path(path).name: sha256_of(path) for path in models[0].all_paths}
        assert on_disk == {name: sha256_of_bytes(content) for name, content in parts.items()}
    assert served(hub_env, "Tiny-Q4_K_M.gguf") == 0


async def test_a_gated_repo_needs_a_token(hub_env, tmp_path):
    data = gguf_bytes(tmp_path, 100_000)
    add_model_repo(hub_env, {FILE: data}, gated="auto")
    async with running_manager(download_settings(tmp_path / "anonymous", hub_env)) as (manager, _, _):
        with pytest.raises(GatedRepoError):
            await manager.enqueue(DownloadRequest(repo_id=REPO, filename=FILE))
        assert manager.list() == []


async def test_a_gated_repo_downloads_with_a_token_that_never_reaches_the_cdn(hub_env, tmp_path):
    data = gguf_bytes(tmp_path, 100_000)
    add_model_repo(hub_env, {FILE: data}, gated="auto")
    settings = download_settings(tmp_path, hub_env, HF_TOKEN="hf_valid_token")
    async with running_manager(settings) as (manager, _, _):
        status = await wait_finished(manager, await enqueue(manager))

    assert status.status == "completed", status.error_message
    assert sha256_of(status.local_file_path) == sha256_of_bytes(data)
    resolves = [r for r in hub_env.requests_to("hub") if "/resolve/" in r.path and r.method == "GET"]
    assert resolves and all(r.authorization == "Bearer hf_valid_token" for r in resolves)
    cdn = hub_env.requests_to("cdn")
    assert cdn and all(r.authorization is None for r in cdn)


async def test_no_more_than_the_concurrency_limit_transfer_at_once(hub_env, tmp_path):
    files = {f"Tiny-{i}-Q4_K_M.gguf": gguf_bytes(tmp_path, 150_000, f"m{i}.gguf", name=f"Model {i}") for i in range(5)}
    add_model_repo(hub_env, files)
    hub_env.throttle_bytes_per_second = 600_000
    settings = download_settings(tmp_path, hub_env, MAX_CONCURRENT_DOWNLOADS=2)
    async with running_manager(settings) as (manager, catalogue, _):
        ids = [(await manager.enqueue(DownloadRequest(repo_id=REPO, filename=name))).download_id for name in files]
        assert [manager.get(i).status for i in ids].count("pending") >= 3
        finished = [await wait_finished(manager, download_id) for download_id in ids]

        assert [s.status for s in finished] == ["completed"] * 5
        assert hub_env.max_concurrent_file_transfers == 2
        started = [s.started_at for s in finished]
        assert started == sorted(started), "pending downloads start in request order"
        assert {Path(s.local_file_path).name: sha256_of(s.local_file_path) for s in finished} == {
            name: sha256_of_bytes(content) for name, content in files.items()
        }
        assert len(catalogue.list_models()) == 5


async def test_large_files_come_over_parallel_ranges_from_one_redirect(hub_env, tmp_path):
    data = gguf_bytes(tmp_path, 6_000_000)
    add_model_repo(hub_env, {FILE: data})
    hub_env.throttle_bytes_per_second = 2_000_000
    settings = download_settings(
        tmp_path, hub_env, HF_TOKEN="hf_valid_token",
        DOWNLOAD_CONNECTIONS=4, DOWNLOAD_PARALLEL_THRESHOLD_BYTES=2_000_000,
    )
    async with running_manager(settings) as (manager, _, _):
        status = await wait_finished(manager, await enqueue(manager))

    assert status.status == "completed", status.error_message
    assert sha256_of(status.local_file_path) == sha256_of_bytes(data)
    assert hub_env.max_concurrent_file_transfers >= 3
    assert served(hub_env, FILE) - len(data) < 0.01 * len(data)
    hub_gets = [r for r in hub_env.requests_to("hub") if "/resolve/" in r.path and r.method == "GET"]
    assert len(hub_gets) == 1, "the redirect is resolved once, the parts go straight to the CDN"
    cdn = hub_env.requests_to("cdn")
    assert len(cdn) >= 5 and all(r.headers["range"].startswith("bytes=") for r in cdn)
    assert all(r.authorization is None for r in cdn)


async def test_a_server_that_ignores_ranges_gets_one_connection_from_the_first_byte(hub_env, tmp_path):
    data = gguf_bytes(tmp_path, 6_000_000)
    add_model_repo(hub_env, {FILE: data})
    hub_env.ignore_ranges = True
    settings = download_settings(tmp_path, hub_env, DOWNLOAD_CONNECTIONS=4, DOWNLOAD_PARALLEL_THRESHOLD_BYTES=2_000_000)
    async with running_manager(settings) as (manager, catalogue, _):
        status = await wait_finished(manager, await enqueue(manager))
        assert catalogue.get_model(status.model_id).file_hash == sha256_of_bytes(data)

    assert status.status == "completed", status.error_message
    assert status.sha256 == sha256_of_bytes(data) and sha256_of(status.local_file_path) == sha256_of_bytes(data)
    gets = [r for r in hub_env.requests if r.method == "GET" and (r.host == "cdn" or "/resolve/" in r.path)]
    assert "range" in gets[0].headers, "a parallel download was tried first"
    assert "range" not in gets[-1].headers, "then the whole file from the first byte"
    assert partial_folders(settings) == []


async def test_the_same_file_requested_twice_gives_the_same_id(hub_env, tmp_path):
    add_model_repo(hub_env, {FILE: gguf_bytes(tmp_path, 400_000)})
    hub_env.throttle_bytes_per_second = 1_000_000
    async with running_manager(download_settings(tmp_path, hub_env)) as (manager, _, _):
        first = await manager.enqueue(DownloadRequest(repo_id=REPO, filename=FILE))
        second = await manager.enqueue(DownloadRequest(repo_id=REPO, filename=FILE))
        assert second.download_id == first.download_id
        assert len(manager.list()) == 1
        await wait_finished(manager, first.download_id)


@pytest.mark.parametrize(
    "filename",
    ["/etc/passwd.gguf", "../escape.gguf", "a/../../b.gguf", "dir\\model.gguf", "model\x00.gguf", "a//b.gguf",
     "./model.gguf", "C:model.gguf", "README.md"],
)
async def test_a_filename_that_could_escape_is_refused_before_asking_the_hub(hub_env, tmp_path, filename):
    async with running_manager(download_settings(tmp_path, hub_env)) as (manager, _, _):
        with pytest.raises(InvalidFileError):
            await manager.enqueue(DownloadRequest(repo_id=REPO, filename=filename))
    assert hub_env.requests == []


async def test_an_unknown_file_is_not_found(hub_env, tmp_path):
    add_model_repo(hub_env, {FILE: gguf_bytes(tmp_path, 10_000)})
    async with running_manager(download_settings(tmp_path, hub_env)) as (manager, _, _):
        with pytest.raises(NotFoundError):
            await manager.enqueue(DownloadRequest(repo_id=REPO, filename="missing.gguf"))
        with pytest.raises(NotFoundError):
            await manager.enqueue(DownloadRequest(repo_id="nobody/nothing", filename=FILE))


async def test_not_enough_free_disk_is_refused_up_front(hub_env, tmp_path, monkeypatch):
    data = gguf_bytes(tmp_path, 100_000)
    add_model_repo(hub_env, {FILE: data})
    monkeypatch.setattr(disk, "free_bytes", lambda path: len(data) - 1)
    async with running_manager(download_settings(tmp_path, hub_env)) as (manager, _, _):
        with pytest.raises(InsufficientStorageError) as raised:
            await manager.enqueue(DownloadRequest(repo_id=REPO, filename=FILE))
        assert raised.value.details["required_bytes"] == len(data)
        assert manager.list() == []


async def test_a_full_disk_fails_clearly_and_the_partial_resumes_later(hub_env, tmp_path, monkeypatch):
    data, settings = serve_model(hub_env, tmp_path, 2_000_000)
    real_write = PartialFile.write

    def write_until_full(self, view, offset):
        if offset >= len(data) // 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, view, offset)

    monkeypatch.setattr(PartialFile, "write", write_until_full)
    async with running_manager(settings) as (manager, catalogue, _):
        first = await manager.enqueue(DownloadRequest(repo_id=REPO, filename=FILE))
        failed = await wait_finished(manager, first.download_id)
        assert failed.status == "failed" and "disk" in failed.error_message and "full" in failed.error_message
        assert 0 < failed.bytes_downloaded < len(data)
        assert partial_folders(settings) != [] and catalogue.list_models() == []

        monkeypatch.setattr(PartialFile, "write", real_write)
        second = await manager.enqueue(DownloadRequest(repo_id=REPO, filename=FILE))
        assert second.download_id != first.download_id and "continues" in second.message
        status = await wait_finished(manager, second.download_id)

    assert status.status == "completed", status.error_message
    assert sha256_of(status.local_file_path) == sha256_of_bytes(data)
    assert hub_env.requests_to("cdn")[-1].headers["range"] == f"bytes={failed.bytes_downloaded}-{len(data) - 1}"


async def test_a_stopped_service_resumes_its_downloads_on_the_next_start(hub_env, tmp_path):
    data, settings = serve_model(hub_env, tmp_path, 1_500_000, throttle=500_000)
    async with running_manager(settings) as (manager, _, _):
        download_id = await enqueue(manager)
        await wait_until(lambda: manager.get(download_id).bytes_downloaded > len(data) // 3, what="a third")
    saved = manager.get(download_id).bytes_downloaded
    hub_env.throttle_bytes_per_second = None
    async with running_manager(settings) as (manager, _, _):
        status = await wait_finished(manager, download_id)

    assert status.status == "completed", status.error_message
    assert sha256_of(status.local_file_path) == sha256_of_bytes(data)
    assert hub_env.requests_to("cdn")[-1].headers["range"] == f"bytes={saved}-{len(data) - 1}"
    # Only what the server pushed into the socket as the service stopped is fetched twice.
    assert served(hub_env, FILE) < 1.1 * len(data)
