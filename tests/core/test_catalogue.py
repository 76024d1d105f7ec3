"""The SQLite catalogue: migrations, refusing a newer schema, and many threads writing at once."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from model_manager.core.catalogue import SCHEMA_VERSION, Catalogue, DownloadRecord, ModelRecord


def _model(number: int, *, file_hash: str | None = None, state: str = "ready") -> ModelRecord:
    return ModelRecord(
        model_id=f"id-{number}",
        display_name=f"Model {number}",
        file_path=f"/models/model-{number}.gguf",
        file_size_bytes=number,
        file_hash=file_hash or f"{number:064x}",
        imported_at=datetime(2025, 1, 1, tzinfo=timezone.utc),
        state=state,
        metadata={"architecture": "llama"},
    )


@pytest.fixture
def catalogue(tmp_path: Path):
    catalogue = Catalogue(tmp_path / "data" / "catalogue.sqlite3")
    catalogue.open()
    yield catalogue
    catalogue.close()


def test_an_empty_database_is_migrated_to_the_current_schema(catalogue):
    assert catalogue.schema_version == SCHEMA_VERSION
    with sqlite3.connect(catalogue.path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"local_models", "downloads"} <= tables


def test_reopening_keeps_rows_and_the_schema(catalogue):
    catalogue.insert_model(_model(1))
    catalogue.close()
    catalogue.open()
    assert catalogue.schema_version == SCHEMA_VERSION
    assert [m.model_id for m in catalogue.list_models()] == ["id-1"]
    assert catalogue.get_model("id-1").metadata == {"architecture": "llama"}


def test_a_catalogue_from_a_newer_version_is_refused_untouched(tmp_path: Path):
    path = tmp_path / "catalogue.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE future (x)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    catalogue = Catalogue(path)
    with pytest.raises(RuntimeError, match="newer"):
        catalogue.open()
    catalogue.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'local_models'").fetchone() is None


def test_pending_rows_are_hidden_until_marked_ready(catalogue):
    catalogue.insert_model(_model(1, state="pending"))
    assert catalogue.list_models() == []
    assert catalogue.get_model("id-1") is None
    assert catalogue.get_model("id-1", include_pending=True).state == "pending"
    catalogue.mark_model_ready("id-1")
    assert [m.state for m in catalogue.list_models()] == ["ready"]


def test_concurrent_inserts_from_threads_all_land(catalogue):
    def insert(first: int) -> None:
        for number in range(first, first + 25):
            catalogue.insert_model(_model(number))

    threads = [threading.Thread(target=insert, args=(start * 100,)) for start in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(catalogue.list_models()) == 16 * 25


def test_concurrent_inserts_of_one_file_keep_exactly_one(catalogue):
    # Two models may share a first file's bytes (a split model and one of its parts imported alone: the
    # library's commit step judges duplicates), but never a file.
    outcomes: list[str] = []

    def insert(number: int) -> None:
        record = _model(number, file_hash="ab" * 32)
        record.file_path = "/models/the-one.gguf"
        try:
            catalogue.insert_model(record)
            outcomes.append("inserted")
        except sqlite3.IntegrityError:
            outcomes.append("refused")

    threads = [threading.Thread(target=insert, args=(number,)) for number in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["inserted"] + ["refused"] * 19
    assert len(catalogue.list_models()) == 1
    catalogue.insert_model(_model(99, file_hash="ab" * 32))  # another file, the same first bytes
    assert len(catalogue.list_models()) == 2


def test_downloads_are_listed_by_status(catalogue):
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    for download_id, status in [("a", "downloading"), ("b", "completed"), ("c", "failed")]:
        catalogue.insert_download(DownloadRecord(download_id, "o/r", "main", "m.gguf", status, now))
    assert [job.download_id for job in catalogue.list_downloads(("downloading", "failed"))] == ["a", "c"]
    assert len(catalogue.list_downloads()) == 3
