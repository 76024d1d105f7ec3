"""`/local/storage/stats` and `/local/storage/cleanup` over HTTP, on real folders."""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from model_manager.core.catalogue import DownloadRecord
from tests.app.test_local_models import catalogue_row_count, import_file, library_files
from tests.gguf_factory import sha256_of, write_gguf

GIB = 1024**3


@pytest.fixture
def library(client, settings, import_dir):
    """Two registered models, an orphaned file, and partial downloads of four jobs, one per state."""
    models = [import_file(client, write_gguf(import_dir / f"m{i}.gguf", name=f"M{i}")).json() for i in range(2)]
    models_dir, downloads_dir = Path(settings.models_dir), Path(settings.downloads_dir)
    (models_dir / "stray.gguf").write_bytes(b"x" * 100)  # named GGUF, provably not: junk once nobody writes it
    an_hour_ago = time.time() - 3600
    os.utime(models_dir / "stray.gguf", (an_hour_ago, an_hour_ago))
    catalogue = client.app.state.catalogue
    now = datetime.now(timezone.utc)
    for download_id, status in [("job-live", "downloading"), ("job-failed", "failed"), ("job-done", "completed"),
                                ("job-cancelled", "cancelled")]:
        catalogue.insert_download(DownloadRecord(download_id, "o/r", "main", "m.gguf", status, now))
        (downloads_dir / download_id).mkdir()
        (downloads_dir / download_id / "m.gguf.part").write_bytes(b"p" * 1000)
    (downloads_dir / "job-done.meta.json").write_text("{}")  # not a download folder of ours: the user's
    (downloads_dir / "unknown.part").write_bytes(b"u" * 10)
    return models


def test_stats_of_an_empty_library(client, settings):
    stats = client.get("/local/storage/stats").json()
    assert stats["total_models"] == stats["total_count"] == 0
    assert stats["total_size_bytes"] == 0 and stats["orphaned_files"] == 0 and stats["partial_downloads_bytes"] == 0
    assert stats["storage_directory"] == str(Path(settings.models_dir).absolute())


def test_stats_measure_the_files_on_disk(client, settings, library, monkeypatch):
    on_disk = [Path(m["file_path"]) for m in library]
    with on_disk[0].open("ab") as file:
        file.write(b"\0" * 4096)  # the catalogue's size is now stale; stats must not trust it
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(200 * GIB, 150 * GIB, 50 * GIB))
    stats = client.get("/local/storage/stats").json()
    assert stats["total_models"] == stats["total_count"] == 2
    assert stats["total_size_bytes"] == sum(p.stat().st_size for p in on_disk)
    assert stats["disk_free_bytes"] == stats["available_bytes"] == 50 * GIB
    assert (stats["disk_free_gb"], stats["disk_total_gb"]) == (50.0, 200.0)
    assert stats["usage_percent"] == 75.0  # (total - free) / total
    assert stats["partial_downloads_bytes"] == 4 * 1000  # our download folders only, never the user's files
    assert stats["orphaned_files"] == 1


def test_cleanup_dry_run_lists_and_removes_nothing(client, settings, library):
    before = sorted(p for p in Path(settings.models_dir).parent.rglob("*") if "data" not in p.parts)
    result = client.post("/local/storage/cleanup", params={"dry_run": "true"}).json()
    assert sorted(result["removed_files"]) == ["job-cancelled", "job-done", "stray.gguf"]
    assert result["removed_count"] == 3 and result["freed_bytes"] == 100 + 2000
    downloads_dir = Path(settings.downloads_dir)
    assert sorted(result["kept_foreign"]) == [str(downloads_dir / "job-done.meta.json"), str(downloads_dir / "unknown.part")]
    assert result["message"].startswith("Would remove")
    assert sorted(p for p in Path(settings.models_dir).parent.rglob("*") if "data" not in p.parts) == before


def test_cleanup_removes_orphans_and_unowned_partials_but_never_a_model(client, settings, library):
    result = client.post("/local/storage/cleanup").json()
    assert result["removed_count"] == 3 and result["freed_bytes"] == 2100
    assert library_files(settings) == sorted(Path(m["file_path"]).name for m in library)
    for model in library:
        assert sha256_of(model["file_path"]) == model["file_hash"]
    assert sorted(p.name for p in Path(settings.downloads_dir).iterdir()) == [
        "job-done.meta.json", "job-failed", "job-live", "unknown.part"
    ]
    assert (Path(settings.downloads_dir) / "unknown.part").read_bytes() == b"u" * 10
    assert client.post("/local/storage/cleanup").json()["removed_count"] == 0


def test_cleanup_keeps_partials_of_downloads_the_manager_reports_active(client, settings, library, monkeypatch):
    monkeypatch.setattr(client.app.state.downloads, "active_ids", lambda: {"job-done"}, raising=False)
    client.post("/local/storage/cleanup")
    assert sorted(p.name for p in Path(settings.downloads_dir).iterdir()) == [
        "job-done", "job-done.meta.json", "job-failed", "job-live", "unknown.part"
    ]


def test_cleanup_drops_rows_whose_files_are_gone(client, settings, library):
    gone = Path(library[0]["file_path"])
    assert client.get("/local/storage/stats").json()["models_with_missing_files"] == 0
    gone.unlink()
    assert len(client.get("/local/models").json()) == 2  # listed until cleanup, never dropped on its own
    assert client.get("/local/storage/stats").json()["models_with_missing_files"] == 1
    dry = client.post("/local/storage/cleanup", params={"dry_run": "true"}).json()
    assert gone.name in dry["removed_files"] and catalogue_row_count(settings) == 2
    result = client.post("/local/storage/cleanup").json()
    assert gone.name in result["removed_files"]
    assert [m["model_id"] for m in client.get("/local/models").json()] == [library[1]["model_id"]]
    assert client.get("/local/storage/stats").json()["models_with_missing_files"] == 0


def test_cleanup_keeps_rows_when_the_models_folder_is_empty(client, settings, import_dir):
    for i in range(2):
        import_file(client, write_gguf(import_dir / f"m{i}.gguf", name=f"M{i}"))
    for name in library_files(settings):
        (Path(settings.models_dir) / name).unlink()  # as if the drive were unmounted
    result = client.post("/local/storage/cleanup").json()
    assert result["removed_count"] == 0 and "missing or empty" in result["message"]
    assert len(client.get("/local/models").json()) == 2


def test_cleanup_never_follows_links_out_of_its_folders(client, settings, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.gguf").write_bytes(b"k" * 50)
    downloads_dir, models_dir = Path(settings.downloads_dir), Path(settings.models_dir)
    (downloads_dir / "linked-folder").symlink_to(outside, target_is_directory=True)
    (downloads_dir / "job-x").mkdir()
    (downloads_dir / "job-x" / "inner-link").symlink_to(outside, target_is_directory=True)
    (models_dir / "linked.gguf").symlink_to(outside / "keep.gguf")
    assert client.get("/local/storage/stats").json()["partial_downloads_bytes"] == 0
    result = client.post("/local/storage/cleanup").json()
    # None of them is provably the service's: all are kept, and nothing is read or removed through the links.
    assert result["removed_files"] == [] and result["freed_bytes"] == 0
    assert sorted(Path(p).name for p in result["kept_foreign"]) == ["job-x", "linked-folder", "linked.gguf"]
    assert (outside / "keep.gguf").read_bytes() == b"k" * 50
    assert sorted(p.name for p in downloads_dir.iterdir()) == ["job-x", "linked-folder"]
    assert (downloads_dir / "job-x" / "inner-link").is_symlink() and (models_dir / "linked.gguf").is_symlink()
