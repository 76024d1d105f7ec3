"""The SQLite catalogue: the one module that reads and writes the local library and the download queue.

Calls are synchronous and short; async callers run them with `asyncio.to_thread`. One connection is
shared behind a lock, in WAL mode, so concurrent requests see a consistent catalogue.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# Forward migrations, applied in order; index i moves the schema from version i to i + 1.
# Add a migration by appending to this list; the schema version follows.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE local_models (
        model_id TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('pending', 'ready')),
        original_repo_id TEXT,
        display_name TEXT NOT NULL,
        file_path TEXT NOT NULL UNIQUE,
        part_paths TEXT NOT NULL DEFAULT '[]',
        file_size_bytes INTEGER NOT NULL,
        file_hash TEXT NOT NULL,
        imported_at TEXT NOT NULL,
        last_accessed TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        is_downloaded INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX local_models_hash ON local_models (file_hash);
    CREATE TABLE downloads (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        download_id TEXT NOT NULL UNIQUE,
        repo_id TEXT NOT NULL,
        revision TEXT NOT NULL,
        filename TEXT NOT NULL,
        quantization TEXT,
        files TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL,
        total_bytes INTEGER,
        bytes_downloaded INTEGER NOT NULL DEFAULT 0,
        error_message TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        completed_at TEXT,
        local_file_path TEXT,
        model_id TEXT,
        sha256 TEXT
    );
    CREATE INDEX downloads_status ON downloads (status);
    """,
    # The GGUF headers of Hub files read before download (docs/fit.md): one file's header is fetched once, ever.
    """
    CREATE TABLE remote_gguf_headers (
        repo_id TEXT NOT NULL,
        revision_commit TEXT NOT NULL,
        filename TEXT NOT NULL,
        etag TEXT NOT NULL,
        header TEXT NOT NULL,
        fetched_at TEXT NOT NULL,
        PRIMARY KEY (repo_id, revision_commit, filename, etag)
    );
    """,
    # Models registered where they lie outside MODELS_DIR (the library never removes their files), and the
    # links and manifests that make a model appear in other tools (docs/exports.md).
    """
    ALTER TABLE local_models ADD COLUMN external INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE model_exports (
        model_id TEXT NOT NULL REFERENCES local_models (model_id) ON DELETE CASCADE,
        target TEXT NOT NULL,
        name TEXT NOT NULL,
        created_paths TEXT NOT NULL DEFAULT '[]',
        details TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        PRIMARY KEY (model_id, target)
    );
    """,
    # A split model may share a part's bytes with another model (one part imported on its own), so the
    # first file's hash no longer has to be unique; the library's commit step decides what is a duplicate.
    """
    DROP INDEX local_models_hash;
    CREATE INDEX local_models_by_hash ON local_models (file_hash);
    """,
    # The files of a deleted model, from the moment its row goes until they are removed: a crash in
    # between finishes the delete at the next start, instead of the files being adopted back as a model.
    """
    CREATE TABLE files_to_remove (
        path TEXT PRIMARY KEY,
        device INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        size INTEGER NOT NULL,
        changed_ns INTEGER NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass
class ModelRecord:
    """A model in the library. `part_paths` lists every file of a split model, in order."""

    model_id: str
    display_name: str
    file_path: str
    file_size_bytes: int
    file_hash: str
    imported_at: datetime
    state: str = "ready"
    original_repo_id: str | None = None
    part_paths: list[str] = field(default_factory=list)
    last_accessed: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    is_downloaded: bool = False
    external: bool = False  # registered where it lies, outside MODELS_DIR: the library never removes its files

    @property
    def all_paths(self) -> list[str]:
        return self.part_paths or [self.file_path]


@dataclass(frozen=True)
class FileToRemove:
    """A file of a deleted model, as it was when the model was deleted: removed only while it still is.
    The change time tells a new file from it that reuses its inode and size (st_ctime cannot be set back)."""

    path: str
    device: int
    inode: int
    size: int
    changed_ns: int


@dataclass
class ExportRecord:
    """A model made visible to another tool. `created_paths` are the links and files we made, nothing else."""

    model_id: str
    target: str
    name: str
    created_paths: list[str]
    details: dict[str, Any]
    created_at: datetime


@dataclass
class DownloadRecord:
    """A download job as the queue stores it. `files` holds one dict per file to fetch."""

    download_id: str
    repo_id: str
    revision: str
    filename: str
    status: str
    created_at: datetime
    quantization: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    total_bytes: int | None = None
    bytes_downloaded: int = 0
    error_message: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    local_file_path: str | None = None
    model_id: str | None = None
    sha256: str | None = None
    seq: int | None = None


class Catalogue:
    """The SQLite catalogue. Open it once per process and share it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------ lifecycle

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        self._conn = conn
        self._migrate()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._db.execute("PRAGMA user_version").fetchone()[0]

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("catalogue is not open")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"catalogue {self.path} has schema {version}, newer than this version of model-manager "
                    f"({SCHEMA_VERSION}); upgrade model-manager or point MODEL_MANAGER_DATA_DIR elsewhere"
                )
            for target in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {target + 1}")

    # ------------------------------------------------------------ models

    @staticmethod
    def _model_from_row(row: sqlite3.Row) -> ModelRecord:
        return ModelRecord(
            model_id=row["model_id"],
            state=row["state"],
            original_repo_id=row["original_repo_id"],
            display_name=row["display_name"],
            file_path=row["file_path"],
            part_paths=json.loads(row["part_paths"]),
            file_size_bytes=row["file_size_bytes"],
            file_hash=row["file_hash"],
            imported_at=_dt(row["imported_at"]),
            last_accessed=_dt(row["last_accessed"]),
            metadata=json.loads(row["metadata"]),
            is_downloaded=bool(row["is_downloaded"]),
            external=bool(row["external"]),
        )

    def insert_model(self, model: ModelRecord) -> ModelRecord:
        """Insert a model row. Raises sqlite3.IntegrityError when its hash or path is already there."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO local_models (model_id, state, original_repo_id, display_name, file_path, part_paths,"
                " file_size_bytes, file_hash, imported_at, last_accessed, metadata, is_downloaded, external)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model.model_id,
                    model.state,
                    model.original_repo_id,
                    model.display_name,
                    model.file_path,
                    json.dumps(model.part_paths),
                    model.file_size_bytes,
                    model.file_hash,
                    _iso(model.imported_at),
                    _iso(model.last_accessed),
                    json.dumps(model.metadata),
                    int(model.is_downloaded),
                    int(model.external),
                ),
            )
        return model

    def mark_model_ready(self, model_id: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE local_models SET state = 'ready' WHERE model_id = ?", (model_id,))

    def get_model(self, model_id: str, *, include_pending: bool = False) -> ModelRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM local_models WHERE model_id = ?", (model_id,)).fetchone()
        if row is None or (row["state"] != "ready" and not include_pending):
            return None
        return self._model_from_row(row)

    def find_model_by_hash(self, file_hash: str) -> ModelRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM local_models WHERE file_hash = ?", (file_hash,)).fetchone()
        return self._model_from_row(row) if row else None

    def list_models(self, *, include_pending: bool = False) -> list[ModelRecord]:
        query = "SELECT * FROM local_models"
        if not include_pending:
            query += " WHERE state = 'ready'"
        with self._lock:
            rows = self._db.execute(query + " ORDER BY imported_at, model_id").fetchall()
        return [self._model_from_row(row) for row in rows]

    def touch_model(self, model_id: str, when: datetime) -> None:
        with self._transaction() as db:
            db.execute("UPDATE local_models SET last_accessed = ? WHERE model_id = ?", (_iso(when), model_id))

    def update_model_metadata(self, model_id: str, changes: dict[str, Any]) -> bool:
        """Merge `changes` into the model's metadata in one transaction. False when there is no such model."""
        with self._transaction() as db:
            row = db.execute("SELECT metadata FROM local_models WHERE model_id = ?", (model_id,)).fetchone()
            if row is None:
                return False
            metadata = {**json.loads(row["metadata"]), **changes}
            db.execute("UPDATE local_models SET metadata = ? WHERE model_id = ?", (json.dumps(metadata), model_id))
        return True

    def delete_model(self, model_id: str, *, removing: Iterable[FileToRemove] = ()) -> bool:
        """Delete the model's row and, in the same transaction, note the files `removing` that go with it."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO files_to_remove (path, device, inode, size, changed_ns) VALUES (?, ?, ?, ?, ?)",
                [(f.path, f.device, f.inode, f.size, f.changed_ns) for f in removing],
            )
            cursor = db.execute("DELETE FROM local_models WHERE model_id = ?", (model_id,))
        return cursor.rowcount > 0

    def files_to_remove(self) -> list[FileToRemove]:
        """The files of deleted models not yet removed (a crash came in between)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM files_to_remove ORDER BY path").fetchall()
        return [FileToRemove(row["path"], row["device"], row["inode"], row["size"], row["changed_ns"]) for row in rows]

    def forget_files_to_remove(self, paths: Iterable[str]) -> None:
        with self._transaction() as db:
            db.executemany("DELETE FROM files_to_remove WHERE path = ?", [(path,) for path in paths])

    # ------------------------------------------------------------ exports

    def save_export(self, export: ExportRecord) -> None:
        """Insert or replace the export of a model to a target."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO model_exports (model_id, target, name, created_paths, details, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (export.model_id, export.target, export.name, json.dumps(export.created_paths),
                 json.dumps(export.details), _iso(export.created_at)),
            )

    def list_exports(self, model_id: str | None = None) -> list[ExportRecord]:
        query, params = "SELECT * FROM model_exports", ()
        if model_id is not None:
            query, params = query + " WHERE model_id = ?", (model_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at, target", params).fetchall()
        return [
            ExportRecord(row["model_id"], row["target"], row["name"], json.loads(row["created_paths"]),
                         json.loads(row["details"]), _dt(row["created_at"]))
            for row in rows
        ]

    def delete_export(self, model_id: str, target: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM model_exports WHERE model_id = ? AND target = ?", (model_id, target))
        return cursor.rowcount > 0

    # ------------------------------------------------------------ downloads

    @staticmethod
    def _download_from_row(row: sqlite3.Row) -> DownloadRecord:
        return DownloadRecord(
            seq=row["seq"],
            download_id=row["download_id"],
            repo_id=row["repo_id"],
            revision=row["revision"],
            filename=row["filename"],
            quantization=row["quantization"],
            files=json.loads(row["files"]),
            status=row["status"],
            total_bytes=row["total_bytes"],
            bytes_downloaded=row["bytes_downloaded"],
            error_message=row["error_message"],
            created_at=_dt(row["created_at"]),
            started_at=_dt(row["started_at"]),
            completed_at=_dt(row["completed_at"]),
            local_file_path=row["local_file_path"],
            model_id=row["model_id"],
            sha256=row["sha256"],
        )

    _DOWNLOAD_COLUMNS = (
        "download_id", "repo_id", "revision", "filename", "quantization", "files", "status", "total_bytes",
        "bytes_downloaded", "error_message", "created_at", "started_at", "completed_at", "local_file_path",
        "model_id", "sha256",
    )

    @staticmethod
    def _download_values(job: DownloadRecord) -> tuple[Any, ...]:
        return (
            job.download_id, job.repo_id, job.revision, job.filename, job.quantization, json.dumps(job.files),
            job.status, job.total_bytes, job.bytes_downloaded, job.error_message, _iso(job.created_at),
            _iso(job.started_at), _iso(job.completed_at), job.local_file_path, job.model_id, job.sha256,
        )

    def insert_download(self, job: DownloadRecord) -> DownloadRecord:
        columns = ", ".join(self._DOWNLOAD_COLUMNS)
        marks = ", ".join("?" for _ in self._DOWNLOAD_COLUMNS)
        with self._transaction() as db:
            cursor = db.execute(f"INSERT INTO downloads ({columns}) VALUES ({marks})", self._download_values(job))
            job.seq = cursor.lastrowid
        return job

    def save_download(self, job: DownloadRecord) -> None:
        """Write every field of an existing job."""
        assignments = ", ".join(f"{name} = ?" for name in self._DOWNLOAD_COLUMNS[1:])
        values = self._download_values(job)
        with self._transaction() as db:
            db.execute(f"UPDATE downloads SET {assignments} WHERE download_id = ?", (*values[1:], job.download_id))

    def get_download(self, download_id: str) -> DownloadRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM downloads WHERE download_id = ?", (download_id,)).fetchone()
        return self._download_from_row(row) if row else None

    def list_downloads(self, statuses: tuple[str, ...] | None = None) -> list[DownloadRecord]:
        query, params = "SELECT * FROM downloads", ()
        if statuses:
            query += f" WHERE status IN ({', '.join('?' for _ in statuses)})"
            params = statuses
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq", params).fetchall()
        return [self._download_from_row(row) for row in rows]

    # ------------------------------------------------------------ remote GGUF headers

    def get_remote_header(self, repo_id: str, commit: str, filename: str, etag: str) -> str | None:
        """The stored header (JSON text) of a Hub file at one commit and ETag, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT header FROM remote_gguf_headers WHERE repo_id = ? AND revision_commit = ? AND filename = ? "
                "AND etag = ?",
                (repo_id, commit, filename, etag),
            ).fetchone()
        return row["header"] if row else None

    def save_remote_header(self, repo_id: str, commit: str, filename: str, etag: str, header: str) -> None:
        """Store a Hub file's header (JSON text); a second save of the same file replaces the first."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO remote_gguf_headers VALUES (?, ?, ?, ?, ?, ?)",
                (repo_id, commit, filename, etag, header, _iso(utc_now())),
            )
