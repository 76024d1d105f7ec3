"""`/local/models` and `/local/import[/upload]` over HTTP, with real GGUF files on real folders."""

from __future__ import annotations

import errno
import os
import random
import shutil
import socket
import sqlite3
import struct
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from model_manager.core.gguf_format import read_gguf_header
from tests.conftest import TEST_TOKEN
from tests.gguf_factory import sha256_of, write_gguf, write_mmproj, write_split_model

BOUNDARY = "test-boundary-7c1f"


# ------------------------------------------------------------------ helpers (also used by test_storage_routes)


def library_files(settings) -> list[str]:
    """Every entry in MODELS_DIR, staging files included."""
    return sorted(os.listdir(settings.models_dir))


def catalogue_row_count(settings) -> int:
    """Rows in local_models, pending ones included."""
    with sqlite3.connect(settings.catalogue_file) as db:
        return db.execute("SELECT COUNT(*) FROM local_models").fetchone()[0]


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code
    return body


def assert_library_empty(client, settings) -> None:
    assert client.get("/local/models").json() == []
    assert library_files(settings) == []
    assert catalogue_row_count(settings) == 0


def import_file(client, path, **body) -> httpx.Response:
    return client.post("/local/import", json={"file_path": str(path), **body})


def multipart_body(parts: list[tuple[str, str | None, bytes]], *, closing: bool = True) -> bytes:
    """A multipart/form-data body of (field, filename or None, content) parts."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + (f"--{BOUNDARY}--\r\n".encode() if closing else b"")


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


# ------------------------------------------------------------------ importing real files


@pytest.mark.parametrize(
    "architecture, file_type, quantization",
    [("llama", 15, "Q4_K_M"), ("qwen2", 7, "Q8_0"), ("gemma3", 1, "F16"), ("phi3", 17, "Q5_K_M"), ("mistral", 30, "IQ4_XS")],
)
def test_import_copies_the_file_and_reads_its_metadata(client, settings, import_dir, architecture, file_type, quantization):
    source = write_gguf(
        import_dir / f"{architecture}.gguf", architecture=architecture, file_type=file_type, name=f"My {architecture}",
        context_length=8192, block_count=3, size_label="7B",
    )
    response = import_file(client, source)
    assert response.status_code == 201, response.text
    model = response.json()
    on_disk = Path(model["file_path"])
    assert on_disk == Path(settings.models_dir).absolute() / f"{architecture}.gguf"
    assert on_disk.read_bytes() == source.read_bytes()
    assert model["file_hash"] == sha256_of(source) == sha256_of(on_disk)
    assert model["file_size_bytes"] == source.stat().st_size
    assert model["display_name"] == architecture
    assert model["is_downloaded"] is False and model["original_repo_id"] is None
    meta = model["metadata"]
    assert (meta["architecture"], meta["quantization"], meta["file_type"]) == (architecture, quantization, file_type)
    assert (meta["name"], meta["context_length"], meta["block_count"], meta["size_label"]) == (f"My {architecture}", 8192, 3, "7B")
    assert meta["split_count"] == 1 and meta["gguf_version"] == 3 and meta["has_chat_template"] is True
    assert source.exists()
    assert library_files(settings) == [f"{architecture}.gguf"]


def test_import_of_a_split_part_is_a_model_of_its_own(client, settings, import_dir):
    parts = write_split_model(import_dir, "big-Q4_K_M", 3)
    response = import_file(client, parts[1], display_name="Part two")
    assert response.status_code == 201, response.text
    model = response.json()
    assert Path(model["file_path"]).name == "big-Q4_K_M-00002-of-00003.gguf"
    assert model["metadata"]["split_count"] == 3
    assert model["display_name"] == "Part two"
    assert model["file_hash"] == sha256_of(parts[1])


def test_import_of_a_multimodal_projector(client, import_dir):
    source = write_mmproj(import_dir / "mmproj-model-f16.gguf")
    model = import_file(client, source).json()
    assert model["metadata"]["architecture"] == "clip"
    assert model["metadata"]["is_mmproj"] is True
    assert model["metadata"]["quantization"] == "F16"
    assert model["metadata"]["has_chat_template"] is False


def test_the_same_bytes_imported_twice_are_one_model(client, settings, import_dir):
    source = write_gguf(import_dir / "model.gguf")
    first = import_file(client, source)
    assert first.status_code == 201
    (import_dir / "copy").mkdir()
    same_bytes = shutil.copy(source, import_dir / "copy" / "renamed.gguf")
    for path in (source, same_bytes):
        again = import_file(client, path, action="move")
        assert again.status_code == 200, again.text
        assert again.json()["model_id"] == first.json()["model_id"]
        assert Path(path).exists()  # nothing was moved
    assert library_files(settings) == ["model.gguf"]
    assert catalogue_row_count(settings) == 1


def test_different_files_with_one_name_get_numbered_names(client, settings, import_dir):
    for folder, name in [("a", "A"), ("b", "B"), ("c", "C")]:
        (import_dir / folder).mkdir()
        assert import_file(client, write_gguf(import_dir / folder / "model.gguf", name=name)).status_code == 201
    assert library_files(settings) == ["model-2.gguf", "model-3.gguf", "model.gguf"]


def test_move_on_the_same_filesystem_renames_the_file(client, settings, import_dir):
    source = write_gguf(import_dir / "model.gguf")
    inode, digest = source.stat().st_ino, sha256_of(source)
    response = import_file(client, source, action="move")
    assert response.status_code == 201, response.text
    on_disk = Path(response.json()["file_path"])
    assert not source.exists()
    assert on_disk.stat().st_ino == inode
    assert sha256_of(on_disk) == digest == response.json()["file_hash"]


@pytest.fixture
def other_filesystem_dir(tmp_path):
    """A folder on another filesystem than tmp_path (tmpfs), or skip."""
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("cross-filesystem move needs a second filesystem: /dev/shm is missing or on the same device as the temp folder")
    folder = Path(tempfile.mkdtemp(dir="/dev/shm"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_move_across_filesystems_copies_then_removes_the_source(client, settings, tmp_path, other_filesystem_dir):
    settings.import_allowed_dirs_raw = str(other_filesystem_dir)
    source = write_gguf(other_filesystem_dir / "model.gguf")
    digest = sha256_of(source)
    response = import_file(client, source, action="move")
    assert response.status_code == 201, response.text
    assert not source.exists()
    assert sha256_of(response.json()["file_path"]) == digest
    assert library_files(settings) == ["model.gguf"]


def test_move_falls_back_to_copying_when_rename_crosses_mounts(client, settings, import_dir, monkeypatch):
    source = write_gguf(import_dir / "model.gguf")
    real_replace = os.replace

    def replace(src, dst):
        if Path(src) == source:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    response = import_file(client, source, action="move")
    assert response.status_code == 201, response.text
    assert not source.exists()
    assert library_files(settings) == ["model.gguf"]


def test_a_symlink_inside_the_allowed_folder_imports_under_its_own_name(client, settings, import_dir):
    (import_dir / "blobs").mkdir()
    blob = write_gguf(import_dir / "blobs" / "3f2a9c.gguf")
    link = import_dir / "nice-name.gguf"
    link.symlink_to(blob)
    response = import_file(client, link)
    assert response.status_code == 201
    assert library_files(settings) == ["nice-name.gguf"]
    assert_error(import_file(client, link, action="move"), 400, "INVALID_FILE")  # a link is never moved
    assert blob.exists() and link.exists()


# ------------------------------------------------------------------ refused imports leave nothing behind


def _gguf_prefix(version: int, tensor_count: int, kv_count: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensor_count, kv_count)


def _bad_source(kind: str, import_dir: Path, tmp_path: Path) -> Path | str:
    target = import_dir / "model.gguf"
    if kind == "missing":
        return target
    if kind == "missing outside":
        return tmp_path / "elsewhere" / "model.gguf"
    if kind == "outside":
        (tmp_path / "elsewhere").mkdir()
        return write_gguf(tmp_path / "elsewhere" / "model.gguf")
    if kind == "symlink to outside":
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(write_gguf(tmp_path / "elsewhere" / "secret.gguf"))
        return target
    if kind == "dot-dot":
        write_gguf(target)
        return f"{import_dir}/../{import_dir.name}/model.gguf"
    if kind == "relative":
        return "incoming/model.gguf"
    if kind == "directory":
        target.mkdir()
        return target
    if kind == "fifo":
        os.mkfifo(target)
        return target
    if kind == "not named .gguf":
        return write_gguf(import_dir / "model.bin")
    if kind == "empty":
        target.write_bytes(b"")
    elif kind == "text":
        target.write_text("this is not a model\n" * 10)
    elif kind == "wrong magic":
        target.write_bytes(b"GGML" + write_gguf(import_dir / "real.gguf").read_bytes()[4:])
    elif kind == "version 1":
        target.write_bytes(_gguf_prefix(1, 0, 0) + b"\0" * 64)
    elif kind == "tensor count 2^63":
        target.write_bytes(_gguf_prefix(3, 2**63, 0) + b"\0" * 64)
    elif kind == "string length 2^40":
        target.write_bytes(_gguf_prefix(3, 0, 1) + struct.pack("<Q", 2**40) + b"general.name" + b"\0" * 64)
    return target


@pytest.mark.parametrize(
    "kind, status, code, says",
    [
        ("missing", 404, "FILE_NOT_FOUND", "no file"),
        ("missing outside", 403, "PATH_NOT_ALLOWED", "outside"),  # existence outside is never revealed
        ("outside", 403, "PATH_NOT_ALLOWED", "IMPORT_ALLOWED_DIRS"),
        ("symlink to outside", 403, "PATH_NOT_ALLOWED", "outside"),
        ("dot-dot", 403, "PATH_NOT_ALLOWED", ".."),
        ("relative", 403, "PATH_NOT_ALLOWED", "absolute"),
        ("directory", 400, "INVALID_FILE", "not a regular file"),
        ("fifo", 400, "INVALID_FILE", "not a regular file"),
        ("not named .gguf", 400, "INVALID_FILE", ".gguf"),
        ("empty", 400, "INVALID_FILE", "empty"),
        ("text", 400, "INVALID_FILE", "magic"),
        ("wrong magic", 400, "INVALID_FILE", "magic"),
        ("version 1", 400, "INVALID_FILE", "version 1"),
        ("tensor count 2^63", 400, "INVALID_FILE", "tensor count"),
        ("string length 2^40", 400, "INVALID_FILE", "limit"),
    ],
)
@pytest.mark.parametrize("action", ["copy", "move"])
def test_a_refused_import_adds_nothing_and_keeps_the_source(
    client, settings, import_dir, tmp_path, kind, status, code, says, action
):
    source = _bad_source(kind, import_dir, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink() and "data" not in p.parts}
    body = assert_error(import_file(client, source, action=action), status, code)
    assert says in body["message"]
    assert_library_empty(client, settings)
    after = {p: p.read_bytes() for p in before if p.exists()}
    assert after == before


def test_every_truncation_of_a_real_file_is_refused(client, settings, import_dir):
    whole = write_gguf(import_dir / "whole.gguf", tensors=1, tensor_elements=8, vocab_size=2, chat_template=None)
    data = whole.read_bytes()
    assert read_gguf_header(whole).header_size < len(data)  # cuts in every header field, then in the tensor data
    target = import_dir / "cut.gguf"
    for length in range(len(data)):
        target.write_bytes(data[:length])
        response = import_file(client, target)
        assert response.status_code == 400, (length, response.text)
        assert response.json()["error_code"] == "INVALID_FILE"
    assert_library_empty(client, settings)
    assert import_file(client, whole).status_code == 201


def test_not_enough_free_disk_is_507_and_copies_nothing(client, settings, import_dir, monkeypatch):
    source = write_gguf(import_dir / "model.gguf")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    assert_error(import_file(client, source), 507, "INSUFFICIENT_STORAGE")
    assert_library_empty(client, settings)
    assert source.exists()


def test_a_malformed_body_is_422(client, settings):
    assert_error(client.post("/local/import", json={"file_path": "/x.gguf", "action": "steal"}), 422, "VALIDATION_ERROR")
    assert_error(client.post("/local/import", json={}), 422, "VALIDATION_ERROR")


# ------------------------------------------------------------------ list, get, delete


def test_list_filters_and_sorts(client, import_dir):
    small = import_file(client, write_gguf(import_dir / "zeta-small.gguf", name="Zeta"), display_name="Zeta small").json()
    big = import_file(client, write_gguf(import_dir / "alpha-big.gguf", tensors=8), display_name="Alpha big").json()
    assert [m["model_id"] for m in client.get("/local/models").json()] == [small["model_id"], big["model_id"]]
    names = lambda **params: [m["display_name"] for m in client.get("/local/models", params=params).json()]  # noqa: E731
    assert names(sort="name") == ["Alpha big", "Zeta small"]
    assert names(sort="size") == ["Alpha big", "Zeta small"]
    assert names(q="ZETA") == ["Zeta small"]
    assert names(q="alpha-big.gguf") == ["Alpha big"]
    assert names(q="nothing") == []
    client.get(f"/local/models/{small['model_id']}")
    assert names(sort="last_accessed") == ["Zeta small", "Alpha big"]
    assert_error(client.get("/local/models", params={"sort": "colour"}), 422, "VALIDATION_ERROR")


def test_get_sets_last_accessed(client, import_dir):
    model = import_file(client, write_gguf(import_dir / "model.gguf")).json()
    assert model["last_accessed"] is None
    fetched = client.get(f"/local/models/{model['model_id']}")
    assert fetched.status_code == 200
    assert fetched.json()["last_accessed"].endswith("+00:00")
    assert client.get("/local/models").json()[0]["last_accessed"] == fetched.json()["last_accessed"]


def test_unknown_model_is_404(client):
    assert_error(client.get("/local/models/nope"), 404, "MODEL_NOT_FOUND")
    assert_error(client.delete("/local/models/nope"), 404, "MODEL_NOT_FOUND")


def test_delete_removes_the_file_and_the_row(client, settings, import_dir):
    source = write_gguf(import_dir / "model.gguf")
    model = import_file(client, source).json()
    response = client.delete(f"/local/models/{model['model_id']}")
    assert response.status_code == 204 and response.content == b""
    assert_library_empty(client, settings)
    assert source.exists()
    assert_error(client.delete(f"/local/models/{model['model_id']}"), 404, "MODEL_NOT_FOUND")


def test_delete_of_a_file_in_use_is_409_unless_forced(client, settings, import_dir):
    model = import_file(client, write_gguf(import_dir / "model.gguf")).json()
    storage = client.app.state.local_storage
    with storage.in_use(model["file_path"]):
        assert_error(client.delete(f"/local/models/{model['model_id']}"), 409, "FILE_IN_USE")
        assert library_files(settings) == ["model.gguf"]
        assert client.delete(f"/local/models/{model['model_id']}", params={"force": "true"}).status_code == 204
    assert_library_empty(client, settings)


# ------------------------------------------------------------------ uploads


def test_upload_streams_a_file_into_the_library(client, settings, import_dir):
    source = write_gguf(import_dir / "up.gguf", architecture="qwen2", file_type=7)
    with source.open("rb") as file:
        response = client.post("/local/import/upload", files={"file": ("Up-Q8_0.gguf", file)}, data={"display_name": "Uploaded"})
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["display_name"] == "Uploaded"
    assert model["metadata"]["architecture"] == "qwen2" and model["metadata"]["quantization"] == "Q8_0"
    assert model["file_hash"] == sha256_of(source) == sha256_of(model["file_path"])
    assert library_files(settings) == ["Up-Q8_0.gguf"]
    again = client.post("/local/import/upload", files={"file": ("other-name.gguf", source.read_bytes())})
    assert again.status_code == 200 and again.json()["model_id"] == model["model_id"]
    assert library_files(settings) == ["Up-Q8_0.gguf"]


def test_upload_honours_a_display_name_sent_after_the_file(client, settings, import_dir):
    data = write_gguf(import_dir / "m.gguf").read_bytes()
    body = multipart_body([("file", "../../etc/.evil.gguf", data), ("display_name", None, b"Late name")])
    response = client.post("/local/import/upload", content=body, headers=MULTIPART)
    assert response.status_code == 201, response.text
    assert response.json()["display_name"] == "Late name"
    assert library_files(settings) == ["evil.gguf"]  # no folders, no leading dot


@pytest.mark.parametrize(
    "parts, status, code",
    [
        ([("file", "notes.txt", b"GGUF")], 400, "INVALID_FILE"),
        ([("file", "model.gguf", b"definitely not a model")], 400, "INVALID_FILE"),
        ([("file", "model.gguf", b"")], 400, "INVALID_FILE"),
        ([("display_name", None, b"no file here")], 422, "VALIDATION_ERROR"),
        ([("file", "a.gguf", b"GGUF"), ("file", "b.gguf", b"GGUF")], 422, "VALIDATION_ERROR"),
        ([("display_name", None, b"x" * 70_000), ("file", "a.gguf", b"GGUF")], 422, "VALIDATION_ERROR"),
    ],
)
def test_a_refused_upload_leaves_nothing(client, settings, parts, status, code):
    response = client.post("/local/import/upload", content=multipart_body(parts), headers=MULTIPART)
    assert_error(response, status, code)
    assert_library_empty(client, settings)


def test_upload_that_is_not_multipart_is_422(client, settings):
    assert_error(client.post("/local/import/upload", content=b"GGUF"), 422, "VALIDATION_ERROR")
    assert_library_empty(client, settings)


def test_upload_without_a_closing_boundary_is_cut_off(client, settings, import_dir):
    data = write_gguf(import_dir / "m.gguf").read_bytes()
    body = multipart_body([("file", "m.gguf", data)], closing=False)
    body = assert_error(client.post("/local/import/upload", content=body, headers=MULTIPART), 400, "INVALID_FILE")
    assert "cut off" in body["message"]
    assert_library_empty(client, settings)


def test_upload_documents_its_multipart_body(client):
    operation = client.get("/openapi.json").json()["paths"]["/local/import/upload"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["file"] and schema["properties"]["file"]["format"] == "binary"


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_upload_ended_early_by_the_client_is_refused(live_server, settings, import_dir):
    data = write_gguf(import_dir / "m.gguf").read_bytes()
    whole = multipart_body([("file", "m.gguf", data)])

    def half_a_body():
        yield whole[: len(whole) // 2]

    with live_server.client() as client:
        response = client.post("/local/import/upload", content=half_a_body(), headers=MULTIPART)
        assert_error(response, 400, "INVALID_FILE")
        assert_library_empty(client, settings)


def test_upload_cut_by_a_disconnect_removes_its_staging_file(live_server, settings, import_dir):
    data = write_gguf(import_dir / "m.gguf", tensors=64, tensor_elements=4096).read_bytes()
    whole = multipart_body([("file", "m.gguf", data)])
    head = (
        f"POST /local/import/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TEST_TOKEN}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(whole)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live_server.port)) as sock:
        sock.sendall(head + whole[: len(whole) // 2])
        # The bytes already sent are on disk before the body has ended: streamed, not spooled.
        _wait_for(lambda: any(name.startswith(".importing-") for name in library_files(settings)))
    _wait_for(lambda: library_files(settings) == [])
    with live_server.client() as client:
        assert_library_empty(client, settings)


# ------------------------------------------------------------------ concurrency


def test_concurrent_imports_and_deletes_leave_catalogue_and_disk_in_agreement(live_server, settings, import_dir):
    sources = []
    for i in range(10):  # three file names shared by ten different files: names must be numbered under load
        (import_dir / f"d{i}").mkdir()
        sources.append(write_gguf(import_dir / f"d{i}" / f"m{i % 3}.gguf", name=f"M{i}", context_length=1000 + i))
    # One client shared by the threads (httpx clients are thread-safe), with a connection per worker.
    with live_server.client(limits=httpx.Limits(max_connections=16)) as client:
        first_ids = [import_file(client, source).json()["model_id"] for source in sources[:5]]
        operations = [("import", sources[i % 10]) for i in range(40)] + [("delete", mid) for mid in first_ids * 2]
        random.Random(7).shuffle(operations)

        def run(operation) -> tuple[str, int]:
            kind, argument = operation
            if kind == "import":
                return kind, import_file(client, argument).status_code
            return kind, client.delete(f"/local/models/{argument}").status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            outcomes = Counter(pool.map(run, operations))
        models = client.get("/local/models").json()

    assert outcomes[("delete", 204)] == 5 and outcomes[("delete", 404)] == 5, outcomes
    assert outcomes[("import", 200)] + outcomes[("import", 201)] == 40, outcomes
    hashes = [model["file_hash"] for model in models]
    assert len(hashes) == len(set(hashes))
    assert {sha256_of(source) for source in sources[5:]} <= set(hashes) <= {sha256_of(source) for source in sources}
    assert library_files(settings) == sorted(Path(model["file_path"]).name for model in models)
    for model in models:
        assert sha256_of(model["file_path"]) == model["file_hash"]
    assert catalogue_row_count(settings) == len(models)
    assert all(source.exists() for source in sources)
