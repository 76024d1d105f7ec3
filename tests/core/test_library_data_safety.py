"""Issue 8: the library never deletes, overwrites or tears apart what people keep in its folders.

One test per scenario of the issue that concerns the library, each on real folders through the HTTP API,
asserting bytes on disk and catalogue rows.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model_manager.app.main import create_app
from model_manager.core.catalogue import DownloadRecord, utc_now
from model_manager.core.services.library.commit import CommitStep
from model_manager.core.services.local_storage import FREE_SPACE_MARGIN_BYTES
from tests.app.test_local_models import assert_error, catalogue_row_count, import_file, multipart_body, BOUNDARY
from tests.conftest import TEST_TOKEN, make_settings
from tests.gguf_factory import sha256_of, write_gguf, write_split_model


def app_client(settings) -> TestClient:
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {TEST_TOKEN}"
    return client


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every path below `folder` (links not followed) with its inode and content: what 'untouched' means."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        found[str(path.relative_to(folder))] = (info.st_ino, content)
    return found


def wait_for_rescan(client: TestClient) -> None:
    """Wait for the rescan each start runs in the background (there is none to wait for before issue 8)."""
    rescan_done = getattr(client.app.state.local_storage, "rescan_done", None)
    if rescan_done is not None:
        client.portal.call(rescan_done)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A user's home: imports may read anywhere in it."""
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


def home_settings(tmp_path: Path, home: Path, **overrides):
    values = dict(IMPORT_ALLOWED_DIRS=str(home))
    values.update(overrides)
    return make_settings(tmp_path, home, **values)


# ------------------------------------------------------------------ scenario 1


def test_cleanup_never_removes_the_users_files_in_a_downloads_folder_they_share(tmp_path, home):
    downloads = home / "Downloads"
    downloads.mkdir()
    (downloads / "photo.jpg").write_bytes(b"\xff\xd8 a photo")
    (downloads / "project").mkdir()
    (downloads / "project" / "notes.txt").write_text("mine")
    (downloads / "model.gguf").write_bytes(b"not even gguf")  # the user's, even if it looks like junk
    before = snapshot(downloads)
    with app_client(home_settings(tmp_path, home, DOWNLOADS_DIR=str(downloads))) as client:
        dry = client.post("/local/storage/cleanup", params={"dry_run": "true"}).json()
        assert dry["removed_files"] == [] and dry["freed_bytes"] == 0
        result = client.post("/local/storage/cleanup").json()
        assert result["removed_files"] == [] and result["removed_count"] == 0
        assert sorted(result["kept_foreign"]) == sorted(str(downloads / n) for n in ("model.gguf", "photo.jpg", "project"))
        assert client.get("/local/storage/stats").json()["partial_downloads_bytes"] == 0
    assert snapshot(downloads) == before


def test_cleanup_removes_our_own_finished_download_folders_in_a_shared_downloads_folder(tmp_path, home):
    downloads = home / "Downloads"
    downloads.mkdir()
    settings = home_settings(tmp_path, home, DOWNLOADS_DIR=str(downloads))
    with app_client(settings) as client:
        job = DownloadRecord("0b0e5b7e-4f43-4a63-9d55-0c8fbf3f5a10", "o/r", "main", "m.gguf", "cancelled", utc_now())
        client.app.state.catalogue.insert_download(job)
        ours = downloads / job.download_id
        ours.mkdir()
        (ours / "file-000.part").write_bytes(b"p" * 300)
        (downloads / "photo.jpg").write_bytes(b"photo")
        result = client.post("/local/storage/cleanup").json()
        assert result["removed_files"] == [job.download_id] and result["freed_bytes"] == 300
    assert sorted(p.name for p in downloads.iterdir()) == ["photo.jpg"]


# ------------------------------------------------------------------ scenario 2


def test_valid_models_already_in_the_models_folder_are_adopted_in_place_never_deleted(tmp_path, home):
    models = home / "models"
    models.mkdir()
    single = write_gguf(models / "mine.Q4_K_M.gguf", name="Mine")
    (models / "big").mkdir()
    parts = write_split_model(models / "big", "big-Q8_0", 2, name="Big")
    broken = models / "half.gguf"
    broken.write_bytes(single.read_bytes()[:100])  # a GGUF cut short: junk, once nobody writes it
    old = time.time() - 3600
    os.utime(broken, (old, old))
    notes = models / "README.txt"
    notes.write_text("my notes")
    kept = {p: (p.stat().st_ino, sha256_of(p)) for p in [single, *parts]}
    with app_client(home_settings(tmp_path, home, MODELS_DIR=str(models))) as client:
        wait_for_rescan(client)  # the start registers them in place
        listed = {m["file_path"]: m for m in client.get("/local/models").json()}
        assert sorted(listed) == sorted([str(single), str(parts[0])])
        assert listed[str(single)]["file_hash"] == sha256_of(single)
        assert listed[str(parts[0])]["metadata"]["parts"] == [
            {"filename": p.name, "sha256": sha256_of(p), "size_bytes": p.stat().st_size} for p in parts
        ]
        result = client.post("/local/storage/cleanup").json()
        assert result["removed_files"] == ["half.gguf"]
        assert str(notes) in result["kept_foreign"]
        assert client.post("/local/storage/rescan").json()["adopted"] == []
    for path, (inode, digest) in kept.items():
        assert (path.stat().st_ino, sha256_of(path)) == (inode, digest)
    assert notes.read_text() == "my notes" and not broken.exists()


def test_rescan_dry_run_lists_and_registers_nothing_and_cleanup_reports_what_it_adopts(tmp_path, home):
    settings = home_settings(tmp_path, home)
    with app_client(settings) as client:
        wait_for_rescan(client)
        model = write_gguf(Path(settings.models_dir) / "late.gguf")  # arrives after the start's rescan
        dry = client.post("/local/storage/rescan", params={"dry_run": "true"}).json()
        assert dry["would_adopt"] == [str(model)] and client.get("/local/models").json() == []
        assert client.get("/local/storage/stats").json()["unregistered_models"] == 1
        assert client.post("/local/storage/cleanup", params={"dry_run": "true"}).json()["adopted"] == [str(model)]
        assert catalogue_row_count(settings) == 0
        result = client.post("/local/storage/cleanup").json()
        assert result["adopted"] == [str(model)] and result["removed_files"] == []
        [listed] = client.get("/local/models").json()
        assert (listed["file_path"], listed["file_hash"]) == (str(model), sha256_of(model))


# ------------------------------------------------------------------ scenario 3


@pytest.mark.parametrize("spelling", ["symlink", "trailing slash", "relative"])
def test_a_differently_spelled_models_folder_loses_nothing(tmp_path, home, monkeypatch, spelling):
    settings = home_settings(tmp_path, home)
    source = write_gguf(home / "model.gguf")
    with app_client(settings) as client:
        model = import_file(client, source).json()
    real = Path(settings.models_dir)
    if spelling == "symlink":
        (tmp_path / "link").symlink_to(real, target_is_directory=True)
        other = str(tmp_path / "link")
    elif spelling == "trailing slash":
        other = str(real) + "/"
    else:
        monkeypatch.chdir(real.parent)
        other = real.name
    with app_client(home_settings(tmp_path, home, MODELS_DIR=other)) as client:
        wait_for_rescan(client)
        result = client.post("/local/storage/cleanup").json()
        assert result["removed_files"] == [] and result["adopted"] == []
        assert [m["model_id"] for m in client.get("/local/models").json()] == [model["model_id"]]
        assert client.get("/local/storage/stats").json()["orphaned_files"] == 0
    assert sha256_of(model["file_path"]) == model["file_hash"]


# ------------------------------------------------------------------ scenario 4


def test_two_files_of_one_download_with_the_same_name_never_overwrite_each_other(tmp_path, home):
    settings = home_settings(tmp_path, home)
    staged = tmp_path / "staged"
    staged.mkdir()
    first = write_gguf(staged / "a.gguf", name="From folder Q4_K_M")
    second = write_gguf(staged / "b.gguf", name="From the top", tensors=3)
    digests = [sha256_of(first), sha256_of(second)]
    with app_client(settings) as client:
        storage = client.app.state.local_storage
        adopt = functools.partial(storage.adopt_download, repo_id="o/r")
        model = client.portal.call(adopt, [first, second], ["model-Q4_K_M.gguf", "model-Q4_K_M.gguf"], digests)
    paths = [Path(model.file_path), *[Path(model.file_path).parent / p["filename"] for p in model.metadata["parts"][1:]]]
    assert len({p.name for p in paths}) == 2
    assert [sha256_of(p) for p in paths] == digests == [p["sha256"] for p in model.metadata["parts"]]
    assert model.file_size_bytes == sum(p.stat().st_size for p in paths)


def test_a_file_that_appears_under_the_chosen_name_is_never_replaced(tmp_path, home, monkeypatch):
    settings = home_settings(tmp_path, home)
    source = write_gguf(home / "model.gguf")
    theirs = Path(settings.models_dir) / "model.gguf"
    choose_names = CommitStep._free_names

    def someone_writes_first(self, *args):
        names = choose_names(self, *args)
        if not theirs.exists():  # between choosing the name and the rename, someone else takes it
            theirs.write_bytes(b"someone else's file")
        return names

    monkeypatch.setattr(CommitStep, "_free_names", someone_writes_first)
    with app_client(settings) as client:
        response = import_file(client, source)
        assert response.status_code == 201, response.text
        model = response.json()
    assert theirs.read_bytes() == b"someone else's file"
    assert Path(model["file_path"]).name == "model-2.gguf" and sha256_of(model["file_path"]) == sha256_of(source)


def test_names_that_differ_only_in_case_or_unicode_form_get_distinct_files(tmp_path, home):
    settings = home_settings(tmp_path, home)
    (home / "a").mkdir()
    (home / "b").mkdir()
    nfc, nfd = "caf\u00e9.gguf", "cafe\u0301.gguf"
    sources = [write_gguf(home / "a" / nfc, name="one"), write_gguf(home / "b" / nfd, name="two", tensors=3),
               write_gguf(home / "CAF\u00c9.gguf", name="three", tensors=4)]
    with app_client(settings) as client:
        models = [import_file(client, s).json() for s in sources]
    names = [Path(m["file_path"]).name for m in models]
    assert len({unicodedata.normalize("NFC", n).casefold() for n in names}) == 3
    assert [sha256_of(m["file_path"]) for m in models] == [sha256_of(s) for s in sources]


# ------------------------------------------------------------------ scenario 5


def test_import_never_takes_a_file_the_library_owns(tmp_path, home):
    settings = home_settings(tmp_path, home, MODELS_DIR=str(home / "models"), DOWNLOADS_DIR=str(home / "Downloads"))
    models = Path(settings.models_dir)
    models.mkdir()
    parts = write_split_model(models, "split-Q4_K_M", 3, name="Split")
    single_source = write_gguf(home / "single.gguf", name="Single")
    with app_client(settings) as client:
        wait_for_rescan(client)
        [split] = client.get("/local/models").json()
        single = import_file(client, single_source).json()
        before = snapshot(models)
        # a part of a registered split model, by move and by copy: refused, the model stays whole
        for action in ("move", "copy"):
            body = assert_error(import_file(client, parts[1], action=action), 409, "FILE_IN_USE")
            assert body["details"]["model_id"] == split["model_id"]
        # the same bytes elsewhere: the library already has them, as part 2 of that model
        copy_of_part = home / "part-copy.gguf"
        copy_of_part.write_bytes(parts[1].read_bytes())
        again = import_file(client, copy_of_part)
        assert again.status_code == 200 and again.json()["model_id"] == split["model_id"]
        # a registered model's own file, by move: 200 with that model, nothing moved
        same = import_file(client, single["file_path"], action="move")
        assert same.status_code == 200 and same.json()["model_id"] == single["model_id"]
        # an unregistered GGUF already inside MODELS_DIR: 409 that points to rescan
        stray = write_gguf(models / "stray.gguf", name="Stray", tensors=5)
        body = assert_error(import_file(client, stray, action="move"), 409, "FILE_IN_USE")
        assert "rescan" in body["message"]
        stray.unlink()
        # the service's partial download folder and data folder
        job = DownloadRecord("6c8e2f8a-2b7a-4d0e-8d0a-3f6a1c2b9e01", "o/r", "main", "m.gguf", "failed", utc_now())
        client.app.state.catalogue.insert_download(job)
        partial = Path(settings.downloads_dir) / job.download_id
        partial.mkdir(parents=True)
        fake_part = write_gguf(partial / "file-000.gguf", name="Partial", tensors=6)
        assert_error(import_file(client, fake_part, action="move"), 409, "FILE_IN_USE")
        # a user's own file elsewhere in DOWNLOADS_DIR imports as usual
        users = write_gguf(Path(settings.downloads_dir) / "users-own.gguf", name="Users", tensors=7)
        assert import_file(client, users).status_code == 201
        listed = client.get("/local/models").json()
        assert len(listed) == 3 and catalogue_row_count(settings) == 3
        assert fake_part.exists()
    assert {k: v for k, v in snapshot(models).items() if k in before} == before
    assert [sha256_of(p) for p in parts] == [p["sha256"] for p in split["metadata"]["parts"]]


# ------------------------------------------------------------------ scenario 10 (the library's part)


def test_an_upload_without_a_declared_length_may_not_fill_the_disk(tmp_path, home, monkeypatch):
    settings = home_settings(tmp_path, home)
    with app_client(settings) as client:
        free = FREE_SPACE_MARGIN_BYTES + 4096
        monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12 - free, free))
        content = write_gguf(home / "big.gguf", tensors=8, tensor_elements=1024).read_bytes()
        body = multipart_body([("file", "big.gguf", content)])

        def chunked():
            for start in range(0, len(body), 1000):
                yield body[start:start + 1000]

        response = client.post(
            "/local/import/upload", content=chunked(),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        assert_error(response, 507, "INSUFFICIENT_STORAGE")
        assert client.get("/local/models").json() == []
    assert os.listdir(settings.models_dir) == [] and catalogue_row_count(settings) == 0


def test_deleting_a_model_another_process_has_open_is_refused_unless_forced(tmp_path, home):
    settings = home_settings(tmp_path, home)
    with app_client(settings) as client:
        model = import_file(client, write_gguf(home / "model.gguf")).json()
        holder = subprocess.Popen(
            [sys.executable, "-c", "import mmap, sys, time\n"
             "f = open(sys.argv[1], 'rb'); m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); f.close()\n"
             "print('ready', flush=True); time.sleep(60)", model["file_path"]],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "ready"
            body = assert_error(client.delete(f"/local/models/{model['model_id']}"), 409, "FILE_IN_USE")
            assert body["details"]["processes"][0]["pid"] == holder.pid
            assert sha256_of(model["file_path"]) == model["file_hash"] and catalogue_row_count(settings) == 1
            assert client.delete(f"/local/models/{model['model_id']}", params={"force": "true"}).status_code == 204
        finally:
            holder.kill()
            holder.wait()
    assert not Path(model["file_path"]).exists() and catalogue_row_count(settings) == 0


def test_a_broken_gguf_that_a_process_holds_open_is_kept_until_it_is_closed(tmp_path, home):
    settings = home_settings(tmp_path, home)
    with app_client(settings) as client:
        wait_for_rescan(client)
        broken = Path(settings.models_dir) / "being-written.gguf"
        broken.write_bytes(b"not yet a gguf")
        an_hour_ago = time.time() - 3600  # old enough: only the open file keeps it
        os.utime(broken, (an_hour_ago, an_hour_ago))
        writer = subprocess.Popen([sys.executable, "-c", "import sys, time\nf = open(sys.argv[1], 'ab')\n"
                                   "print('ready', flush=True); time.sleep(60)", str(broken)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline().strip() == "ready"
            result = client.post("/local/storage/cleanup").json()
            assert result["removed_files"] == [] and str(broken) in result["kept_foreign"]
            assert broken.read_bytes() == b"not yet a gguf"
        finally:
            writer.kill()
            writer.wait()
        assert client.post("/local/storage/cleanup").json()["removed_files"] == ["being-written.gguf"]
    assert not broken.exists()


def test_a_failed_link_import_takes_back_only_its_own_link(tmp_path, home, monkeypatch):
    """The undo of a half-done link import removes the link it made, never a file put in its place since."""
    from model_manager.core.catalogue import Catalogue

    settings = home_settings(tmp_path, home)
    source = write_gguf(home / "model.gguf")
    digest = sha256_of(source)
    final = Path(settings.models_dir) / "model.gguf"

    def replaced_then_fails(self, model_id):
        final.unlink()
        final.write_bytes(b"someone else's file")
        raise OSError(5, "Input/output error")

    with app_client(settings) as client:
        wait_for_rescan(client)
        monkeypatch.setattr(Catalogue, "mark_model_ready", replaced_then_fails)
        response = client.post("/local/import", json={"file_path": str(source), "action": "link"})
        assert response.status_code >= 500 and client.get("/local/models").json() == []
    assert final.read_bytes() == b"someone else's file" and sha256_of(source) == digest
