"""The library service itself: crash recovery, work kept off the event loop, adopting downloads."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model_manager.app.main import create_app
from model_manager.core import gguf_format
from model_manager.core.catalogue import Catalogue, ModelRecord
from model_manager.core.errors import FileInUseError, InvalidFileError
from model_manager.core.services.library import files as library_file_helpers
from model_manager.core.services.local_storage import STAGING_PREFIX, LocalStorage
from tests.app.test_local_models import catalogue_row_count, import_file, library_files, other_filesystem_dir  # noqa: F401
from tests.conftest import TEST_TOKEN
from tests.gguf_factory import sha256_of, write_gguf, write_split_model


@pytest.fixture
async def storage(settings):
    for folder in (settings.models_dir, settings.downloads_dir, settings.data_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    catalogue = Catalogue(settings.catalogue_file)
    catalogue.open()
    yield LocalStorage(settings, catalogue)
    catalogue.close()


def restarted(settings) -> TestClient:
    """A new app on the same folders: its start runs `reconcile()`."""
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {TEST_TOKEN}"
    return client


async def chunks_of(path: Path, size: int = 1024 * 1024):
    with path.open("rb") as file:
        while chunk := file.read(size):
            yield chunk


# ------------------------------------------------------------------ crash recovery

# Runs one import or delete in a fresh process that dies (os._exit) just before or after a catalogue call.
CRASH_SCRIPT = r"""
import asyncio, os, sys
from model_manager.core.catalogue import Catalogue
from model_manager.core.config import Settings
from model_manager.core.services.local_storage import LocalStorage

method, when, operation, argument, action = sys.argv[1:6]
original = getattr(Catalogue, method)

def crash(self, *args, **kwargs):
    if when == "after":
        original(self, *args, **kwargs)
    os._exit(17)

async def main():
    settings = Settings(_env_file=None)
    catalogue = Catalogue(settings.catalogue_file)
    catalogue.open()
    setattr(Catalogue, method, crash)
    storage = LocalStorage(settings, catalogue)
    if operation == "import":
        await storage.import_file(argument, action)
    else:
        await storage.delete_model(argument)

asyncio.run(main())
sys.exit(3)
"""


def crash_during(settings, method: str, when: str, operation: str, argument: str, action: str = "copy") -> None:
    env = {
        **os.environ,
        "MODELS_DIR": str(settings.models_dir),
        "DOWNLOADS_DIR": str(settings.downloads_dir),
        "MODEL_MANAGER_DATA_DIR": str(settings.data_dir),
        "IMPORT_ALLOWED_DIRS": settings.import_allowed_dirs_raw,
        "MODEL_MANAGER_API_TOKEN": TEST_TOKEN,
    }
    done = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, method, when, operation, argument, action], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 17, done.stderr


@pytest.mark.parametrize(
    "action, method, when, left_on_disk, survives",
    [
        ("copy", "insert_model", "before", "staging", False),  # copied and fsynced, no row yet
        ("copy", "insert_model", "after", "staging", False),  # pending row, not renamed
        ("copy", "mark_model_ready", "before", "model.gguf", True),  # renamed, row still pending
        ("copy", "mark_model_ready", "after", "model.gguf", True),
        ("move", "insert_model", "after", None, False),  # pending row, source not renamed yet
        ("move", "mark_model_ready", "before", "model.gguf", True),  # renamed, row still pending
    ],
)
def test_a_crash_at_any_step_of_an_import_leaves_no_model_or_a_whole_one(
    settings, import_dir, action, method, when, left_on_disk, survives
):
    source = write_gguf(import_dir / "model.gguf")
    digest = sha256_of(source)
    Path(settings.models_dir).mkdir(parents=True)
    crash_during(settings, method, when, "import", str(source), action)
    files = library_files(settings)
    if left_on_disk == "staging":
        assert len(files) == 1 and files[0].startswith(STAGING_PREFIX)
    else:
        assert files == ([left_on_disk] if left_on_disk else [])

    with restarted(settings) as client:
        models = client.get("/local/models").json()
        if survives:
            assert [m["file_hash"] for m in models] == [digest]
            assert sha256_of(models[0]["file_path"]) == digest
            assert library_files(settings) == ["model.gguf"]
        else:
            assert models == [] and library_files(settings) == []
        assert catalogue_row_count(settings) == len(models)
        if action == "move" and survives:
            assert not source.exists()  # it is the model's file now
        else:
            assert sha256_of(source) == digest  # the source is never lost
            assert import_file(client, source).status_code == (200 if survives else 201)


def test_a_crash_after_a_cross_filesystem_move_registered_keeps_the_source(settings, other_filesystem_dir):
    settings.import_allowed_dirs_raw = str(other_filesystem_dir)
    source = write_gguf(other_filesystem_dir / "model.gguf")
    Path(settings.models_dir).mkdir(parents=True)
    crash_during(settings, "mark_model_ready", "after", "import", str(source), "move")
    with restarted(settings) as client:
        assert [m["file_hash"] for m in client.get("/local/models").json()] == [sha256_of(source)]


def test_a_crash_during_delete_is_finished_at_the_next_start(settings, import_dir):
    """The row went, the file stayed: the next start removes it, rather than adopting it back as a model."""
    with restarted(settings) as client:
        model = import_file(client, write_gguf(import_dir / "model.gguf")).json()
    crash_during(settings, "delete_model", "after", "delete", model["model_id"])
    assert library_files(settings) == ["model.gguf"]  # the crash came between the row and the file
    with restarted(settings) as client:
        client.portal.call(client.app.state.local_storage.rescan_done)
        assert client.get("/local/models").json() == []
        assert library_files(settings) == [] and catalogue_row_count(settings) == 0
        assert client.app.state.catalogue.files_to_remove() == []
    assert sha256_of(import_dir / "model.gguf") == model["file_hash"]  # the imported source was a copy


def test_a_file_put_where_a_deleted_model_was_is_kept_after_a_crash(settings, import_dir):
    with restarted(settings) as client:
        model = import_file(client, write_gguf(import_dir / "model.gguf")).json()
    crash_during(settings, "delete_model", "after", "delete", model["model_id"])
    path = Path(model["file_path"])
    path.unlink()
    other = write_gguf(path, name="the user's own")  # a new file under the same name, before the start
    digest = sha256_of(other)
    with restarted(settings) as client:
        client.portal.call(client.app.state.local_storage.rescan_done)
        [adopted] = client.get("/local/models").json()
        assert adopted["file_hash"] == digest and sha256_of(path) == digest
        assert client.app.state.catalogue.files_to_remove() == []


def _record(settings, name: str, size: int, state: str) -> ModelRecord:
    return ModelRecord(
        model_id=f"id-{name}", display_name=name, file_path=str(Path(settings.models_dir).absolute() / name),
        file_size_bytes=size, file_hash=name.ljust(64, "0"), imported_at=datetime.now(timezone.utc), state=state,
    )


async def test_reconcile_rolls_back_a_pending_row_whose_file_is_incomplete_and_keeps_the_file(storage, settings, import_dir):
    # The file may be a person's own (moved in, or registered in place): only the row and our staging file go.
    model_file = write_gguf(Path(settings.models_dir) / "model.gguf")
    digest = sha256_of(model_file)
    storage.catalogue.insert_model(_record(settings, "model.gguf", model_file.stat().st_size + 1, "pending"))
    (Path(settings.models_dir) / f"{STAGING_PREFIX}dead.part").write_bytes(b"GGUF")
    await storage.reconcile()
    assert library_files(settings) == ["model.gguf"] and sha256_of(model_file) == digest
    assert catalogue_row_count(settings) == 0
    [adopted] = (await storage.rescan()).adopted  # the valid GGUF it left is a model, registered where it is
    assert (adopted.file_path, adopted.file_hash) == (str(model_file), digest)


async def test_reconcile_keeps_ready_rows_whose_files_are_missing(storage, settings, import_dir):
    kept, _ = await storage.import_file(str(write_gguf(import_dir / "kept.gguf")))
    storage.catalogue.insert_model(_record(settings, "unmounted.gguf", 10, "ready"))
    await storage.reconcile()
    assert {m.display_name for m in await storage.list_models()} == {"kept", "unmounted.gguf"}


# ------------------------------------------------------------------ the event loop and memory


class _WatchedCatalogue:
    """The catalogue, noting every call made on the event loop's thread."""

    def __init__(self, catalogue: Catalogue, loop_thread: threading.Thread, on_loop: list[str]) -> None:
        self._catalogue, self._loop_thread, self._on_loop = catalogue, loop_thread, on_loop

    def __getattr__(self, name: str):
        attribute = getattr(self._catalogue, name)
        if not callable(attribute):
            return attribute

        def watched(*args, **kwargs):
            if threading.current_thread() is self._loop_thread:
                self._on_loop.append(f"catalogue.{name}")
            return attribute(*args, **kwargs)

        return watched


async def test_blocking_calls_never_run_on_the_event_loop(storage, settings, import_dir, monkeypatch):
    sources = [write_gguf(import_dir / f"m{i}.gguf", name=f"M{i}") for i in range(3)]
    download = write_gguf(Path(settings.downloads_dir) / "dl.gguf", name="D")
    loop_thread = threading.current_thread()
    on_loop: list[str] = []

    def watch(owner, name: str) -> None:
        original = getattr(owner, name)

        def watched(*args, **kwargs):
            if threading.current_thread() is loop_thread:
                on_loop.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, watched)

    for name in ("read_gguf_header", "hash_file", "fsync_dir", "remove_files", "tree_size", "same_filesystem"):
        watch(library_file_helpers, name)
    for name in ("fsync", "replace", "unlink", "listdir", "scandir", "open"):
        watch(os, name)
    watch(shutil, "disk_usage")
    storage.catalogue = _WatchedCatalogue(storage.catalogue, loop_thread, on_loop)

    await storage.reconcile()
    model, _ = await storage.import_file(str(sources[0]))
    await storage.import_file(str(sources[0]))
    await storage.import_file(str(sources[1]), "move")
    await storage.import_upload(chunks_of(sources[2]), "up.gguf")
    await storage.adopt_download([download], ["dl.gguf"], [sha256_of(download)], repo_id="o/r")
    await storage.get_model(model.model_id)
    await storage.list_models("m")
    await storage.storage_stats()
    await storage.cleanup(dry_run=True)
    await storage.delete_model(model.model_id)
    await storage.cleanup()
    assert on_loop == []


async def test_a_large_import_keeps_the_loop_responsive_and_memory_bounded(storage, settings, import_dir):
    size = 64 * 1024 * 1024
    big = write_gguf(import_dir / "big.gguf")
    with big.open("r+b") as file:
        file.truncate(size)  # zero padding after the tensors; the header is all that is read
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    tracemalloc.start()
    try:
        copied, _ = await storage.import_file(str(big))
        await storage.delete_model(copied.model_id)
        uploaded, _ = await storage.import_upload(chunks_of(big), "big.gguf")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        stop.set()
        await ticking
    assert uploaded.file_size_bytes == size
    assert peak < size / 3, f"peak memory {peak} bytes for a {size}-byte file"
    assert max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.3f} s"


# ------------------------------------------------------------------ imports racing with changes and cleanup


async def test_a_source_that_changes_while_copied_is_refused(storage, settings, import_dir, monkeypatch):
    source = write_gguf(import_dir / "model.gguf")
    hash_file = library_file_helpers.hash_file

    def hash_then_change(path, expected):
        digest = hash_file(path, expected)
        with open(path, "ab") as file:
            file.write(b"more bytes")
        return digest

    monkeypatch.setattr(library_file_helpers, "hash_file", hash_then_change)
    with pytest.raises(InvalidFileError, match="changed while"):
        await storage.import_file(str(source), "move")
    assert source.exists()
    assert library_files(settings) == [] and catalogue_row_count(settings) == 0


async def test_cleanup_spares_the_staging_file_of_an_upload_in_progress(storage, settings, import_dir):
    data = write_gguf(import_dir / "model.gguf").read_bytes()
    stale = Path(settings.models_dir) / f"{STAGING_PREFIX}left-by-a-crash.part"
    stale.write_bytes(b"old")
    halfway, resume = asyncio.Event(), asyncio.Event()

    async def slow_upload():
        yield data[:100]
        halfway.set()
        await resume.wait()
        yield data[100:]

    uploading = asyncio.create_task(storage.import_upload(slow_upload(), "model.gguf"))
    await halfway.wait()
    await asyncio.sleep(0.05)  # let the first chunk reach the staging file
    result = await storage.cleanup()
    assert result.removed_files == [stale.name]
    resume.set()
    model, created = await uploading
    assert created and sha256_of(model.file_path) == model.file_hash
    assert library_files(settings) == ["model.gguf"]


async def test_a_file_marked_in_use_cannot_be_deleted(storage, import_dir):
    model, _ = await storage.import_file(str(write_gguf(import_dir / "model.gguf")))
    storage.mark_in_use(model.file_path)
    with pytest.raises(FileInUseError):
        await storage.delete_model(model.model_id)
    storage.release(model.file_path)
    await storage.delete_model(model.model_id)
    assert await storage.list_models() == []


# ------------------------------------------------------------------ adopting downloads


async def test_adopt_moves_a_download_into_the_library(storage, settings):
    folder = Path(settings.downloads_dir) / "job-1"
    folder.mkdir()
    part = write_gguf(folder / "blob.part", architecture="qwen2", file_type=7)
    inode, digest = part.stat().st_ino, sha256_of(part)
    model = await storage.adopt_download([part], ["Qwen-Q8_0.gguf"], [digest], repo_id="org/Qwen-GGUF")
    assert model.is_downloaded and model.original_repo_id == "org/Qwen-GGUF"
    assert model.display_name == "Qwen-Q8_0" and model.metadata["quantization"] == "Q8_0"
    assert Path(model.file_path).stat().st_ino == inode and model.file_hash == digest
    assert not part.exists()
    assert library_files(settings) == ["Qwen-Q8_0.gguf"]


async def test_adopt_registers_a_split_model_as_one_with_a_common_stem(storage, settings):
    models = []
    for run, name in enumerate(["First", "Second"]):
        folder = Path(settings.downloads_dir) / f"job-{run}"
        folder.mkdir()
        parts = write_split_model(folder, "big-Q4_K_M", 3, name=name)
        names = [p.name for p in parts]
        models.append(await storage.adopt_download(parts, names, [sha256_of(p) for p in parts], repo_id="o/big"))
    first, second = models
    assert Path(first.file_path).name == "big-Q4_K_M-00001-of-00003.gguf"
    assert [p["filename"] for p in second.metadata["parts"]] == gguf_format.split_part_names("big-Q4_K_M-2", 3)
    assert Path(second.file_path).name == second.metadata["parts"][0]["filename"]
    assert second.metadata["split_count"] == 3
    on_disk = [Path(settings.models_dir) / p["filename"] for p in second.metadata["parts"]]
    assert second.file_size_bytes == sum(p.stat().st_size for p in on_disk)
    assert [sha256_of(p) for p in on_disk] == [p["sha256"] for p in second.metadata["parts"]]
    assert len(library_files(settings)) == 6
    await storage.delete_model(second.model_id)
    assert len(library_files(settings)) == 3


async def test_adopting_known_bytes_returns_the_model_and_deletes_the_parts(storage, settings, import_dir):
    source = write_gguf(import_dir / "model.gguf")
    existing, _ = await storage.import_file(str(source))
    part = Path(shutil.copy(source, Path(settings.downloads_dir) / "job.part"))
    adopted = await storage.adopt_download([part], ["model.gguf"], [sha256_of(part)], repo_id="o/r")
    assert adopted.model_id == existing.model_id
    assert not part.exists() and library_files(settings) == ["model.gguf"]


async def test_adopt_across_filesystems_checks_the_hash_of_the_copy(storage, settings, other_filesystem_dir):
    part = write_gguf(other_filesystem_dir / "job.part")
    with pytest.raises(InvalidFileError):
        await storage.adopt_download([part], ["model.gguf"], ["0" * 64], repo_id="o/r")
    assert part.exists() and library_files(settings) == [] and catalogue_row_count(settings) == 0
    model = await storage.adopt_download([part], ["model.gguf"], [sha256_of(part)], repo_id="o/r")
    assert not part.exists() and sha256_of(model.file_path) == model.file_hash


async def test_adopt_refuses_a_file_that_is_not_gguf(storage, settings):
    part = Path(settings.downloads_dir) / "job.part"
    part.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(InvalidFileError):
        await storage.adopt_download([part], ["model.gguf"], [sha256_of(part)], repo_id="o/r")
    assert part.exists() and library_files(settings) == [] and catalogue_row_count(settings) == 0
