"""Issue 11: one copy of a model for every tool. Imports by link and register, and exports to Ollama,
LM Studio and the Hugging Face cache, checked with the tools' own readers where one runs here:
huggingface_hub, llama.cpp (node-llama-cpp's build) and Ollama's documented manifest format."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from gguf import GGUFWriter
from huggingface_hub import hf_hub_download, scan_cache_dir

from model_manager.app.main import create_app
from tests.app.test_local_models import assert_error, catalogue_row_count, import_file
from tests.conftest import TEST_TOKEN, make_settings
from tests.core.test_library_data_safety import snapshot
from tests.gguf_factory import sha256_of, write_gguf, write_split_model
from tests.llama import harness
from tests.llama.models import LLAMA_GQA, write_model
from tests.requirements import require

MIB = 1024 * 1024


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home folder where the other tools keep their files in their default places."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    for name in ("OLLAMA_MODELS", "HF_HUB_CACHE", "HF_HOME", "LLAMA_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return folder


@pytest.fixture
def client(tmp_path: Path, home: Path):
    settings = make_settings(tmp_path, home, IMPORT_ALLOWED_DIRS=f"{home},/dev/shm")
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {TEST_TOKEN}"
        test_client.settings = settings
        yield test_client


def export(client, model_id: str, target: str, **body) -> dict:
    response = client.post(f"/local/models/{model_id}/exports", json={"target": target, **body})
    assert response.status_code == 201, response.text
    return response.json()


def disk_blocks(folder: Path) -> int:
    """Bytes of disk blocks under `folder`, each file counted once however many names it has."""
    seen, total = set(), 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            info = os.lstat(os.path.join(root, name))
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def ollama_home(home: Path) -> Path:
    return home / ".ollama" / "models"


def plant_ollama_model(home: Path, name: str, tag: str, model_file: Path) -> Path:
    """An Ollama model the way `ollama pull` leaves it: blob, config blob and manifest. Returns the blob."""
    blobs = ollama_home(home) / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    digest = sha256_of(model_file)
    blob = blobs / f"sha256-{digest}"
    os.replace(model_file, blob)
    config = json.dumps({"model_format": "gguf", "model_family": "llama", "file_type": "F32"}).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    (blobs / f"sha256-{config_digest}").write_bytes(config)
    manifest = ollama_home(home) / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": f"sha256:{config_digest}",
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
                    "size": blob.stat().st_size}],
    }))
    return blob


# ------------------------------------------------------------------ the Hugging Face cache


def test_an_hf_cache_export_is_found_offline_by_huggingface_hub(client, home):
    model = import_file(client, write_gguf(home / "tiny.Q4_K_M.gguf", name="Tiny")).json()
    result = export(client, model["model_id"], "hf-cache", name="someone/Tiny-GGUF")
    cache = home / ".cache" / "huggingface" / "hub"
    report = scan_cache_dir(cache)
    assert report.warnings == []
    [repo] = report.repos
    assert (repo.repo_id, repo.size_on_disk) == ("someone/Tiny-GGUF", model["file_size_bytes"])
    path = hf_hub_download("someone/Tiny-GGUF", "tiny.Q4_K_M.gguf", cache_dir=cache, local_files_only=True)
    assert sha256_of(path) == model["file_hash"]
    assert os.stat(path).st_ino == os.stat(model["file_path"]).st_ino  # the same bytes, not a copy
    assert result["method"] == "hardlink" and result["details"]["revision"] == "main"
    listed = client.get(f"/local/models/{model['model_id']}").json()
    assert [e["target"] for e in listed["exports"]] == ["hf-cache"] and "hf-cache" in listed["run"]
    assert client.delete(f"/local/models/{model['model_id']}/exports/hf-cache").status_code == 204
    assert not cache.exists()  # every folder the export made went with it
    assert sha256_of(model["file_path"]) == model["file_hash"]


def test_an_hf_cache_export_keeps_a_refs_main_that_names_the_persons_own_download(client, home):
    cache = home / ".cache" / "huggingface" / "hub"
    theirs = cache / "models--someone--Tiny-GGUF"
    (theirs / "refs").mkdir(parents=True)
    (theirs / "refs" / "main").write_text("a" * 40)
    (theirs / "snapshots" / ("a" * 40)).mkdir(parents=True)
    model = import_file(client, write_gguf(home / "tiny.gguf")).json()
    result = export(client, model["model_id"], "hf-cache", name="someone/Tiny-GGUF")
    assert (theirs / "refs" / "main").read_text() == "a" * 40
    commit = result["details"]["commit"]
    path = hf_hub_download("someone/Tiny-GGUF", "tiny.gguf", revision=commit, cache_dir=cache, local_files_only=True)
    assert sha256_of(path) == model["file_hash"] and result["notes"]
    assert client.delete(f"/local/models/{model['model_id']}").status_code == 204
    assert (theirs / "refs" / "main").read_text() == "a" * 40 and (theirs / "snapshots" / ("a" * 40)).is_dir()
    assert not (theirs / "snapshots" / commit).exists()


# ------------------------------------------------------------------ Ollama


def test_an_ollama_export_is_a_manifest_whose_layers_are_their_blobs(client, home):
    model = import_file(client, write_gguf(home / "tiny.Q4_K_M.gguf", name="Tiny", size_label="1B")).json()
    result = export(client, model["model_id"], "ollama", name="tiny:q4")
    assert result["name"] == "tiny:q4" and result["details"]["run"] == "ollama run tiny:q4"
    manifest_path = ollama_home(home) / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "q4"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    layers = [manifest["config"], *manifest["layers"]]
    for layer in layers:
        blob = ollama_home(home) / "blobs" / layer["digest"].replace(":", "-")
        assert layer["digest"] == f"sha256:{sha256_of(blob)}" and layer["size"] == blob.stat().st_size
    [model_layer] = manifest["layers"]
    assert model_layer["mediaType"] == "application/vnd.ollama.image.model"
    assert model_layer["digest"] == f"sha256:{model['file_hash']}"
    model_blob = ollama_home(home) / "blobs" / f"sha256-{model['file_hash']}"
    assert model_blob.stat().st_ino == os.stat(model["file_path"]).st_ino
    config = json.loads((ollama_home(home) / "blobs" / manifest["config"]["digest"].replace(":", "-")).read_bytes())
    # Ollama's ConfigV2 (types/model/config.go): strings, and a list of strings for the families
    assert config["model_format"] == "gguf" and config["file_type"] == "Q4_K_M" and config["model_type"] == "1B"
    assert config["model_family"] == "llama" and config["model_families"] == ["llama"]
    assert all(isinstance(config[key], str) for key in ("model_format", "model_family", "model_type", "file_type",
                                                       "architecture", "os"))
    assert client.delete(f"/local/models/{model['model_id']}/exports/ollama").status_code == 204
    assert not manifest_path.exists() and not model_blob.exists()
    assert not ollama_home(home).exists()  # every folder the export made went with it


def test_ollama_refuses_a_split_model_and_a_bad_name(client, home):
    parts = write_split_model(home, "big-Q8_0", 2)
    split, _ = client.portal.call(
        lambda: client.app.state.local_storage.import_file(str(parts[0]), "link", part_paths=[str(parts[1])])
    )
    single = import_file(client, write_gguf(home / "one.gguf", tensors=5)).json()
    assert_error(client.post(f"/local/models/{split.model_id}/exports", json={"target": "ollama"}), 400, "INVALID_FILE")
    assert_error(client.post(f"/local/models/{single['model_id']}/exports", json={"target": "ollama", "name": "Bad/Name"}),
                 400, "INVALID_FILE")
    assert not (ollama_home(home) / "manifests").exists()


# ------------------------------------------------------------------ llama.cpp loads the exports


def test_llama_cpp_loads_the_model_from_the_lmstudio_and_hf_cache_exports(client, home):
    require(harness.available(), "node-llama-cpp is not installed (./test.sh installs it into tests/llama/node_modules)")
    source = write_model(home / "tiny-llama-F16.gguf", LLAMA_GQA)
    model = import_file(client, source).json()
    lmstudio = export(client, model["model_id"], "lmstudio", name="someone/Tiny-GGUF")
    hf = export(client, model["model_id"], "hf-cache", name="someone/Tiny-GGUF")
    lmstudio_file = home / ".lmstudio" / "models" / "someone" / "Tiny-GGUF" / "tiny-llama-F16.gguf"
    assert lmstudio["created_paths"] == [str(lmstudio_file)]
    assert lmstudio_file.stat().st_ino == os.stat(model["file_path"]).st_ino
    hf_file = hf_hub_download("someone/Tiny-GGUF", "tiny-llama-F16.gguf", cache_dir=home / ".cache" / "huggingface" / "hub",
                              local_files_only=True)
    assert Path(hf_file).is_symlink() and hf["method"] == "hardlink"
    from_lmstudio, from_hf = harness.generate_tokens([lmstudio_file, hf_file], count=4)
    assert len(from_lmstudio) == 4 and from_lmstudio == from_hf  # the same model, greedy: the same tokens


# ------------------------------------------------------------------ zero copies, and only our files go


def test_link_import_and_three_exports_of_a_1_gib_model_add_no_copy(client, home, tmp_path):
    writer_path = home / "big.gguf"
    writer = GGUFWriter(writer_path, "llama")
    writer.add_name("Big")
    writer.add_block_count(1)
    writer.add_tensor("blk.0.weight", np.zeros((1024, 262144), dtype=np.float32))  # 1 GiB of data
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    blob = plant_ollama_model(home, "big", "latest", writer_path)
    ollama_before = snapshot_without_content(ollama_home(home))
    before = disk_blocks(tmp_path)
    model = client.post("/local/import", json={"file_path": str(blob), "action": "link",
                                               "display_name": "Big"}).json()
    assert model["file_hash"] == blob.name.removeprefix("sha256-")
    assert disk_blocks(tmp_path) - before < MIB  # linked, not copied
    before = disk_blocks(tmp_path)
    # "big:latest" is Ollama's own model of the same bytes: that name is refused, another one is used
    assert_error(client.post(f"/local/models/{model['model_id']}/exports", json={"target": "ollama"}), 409, "FILE_IN_USE")
    export(client, model["model_id"], "ollama", name="big-linked")
    for target in ("lmstudio", "hf-cache"):
        export(client, model["model_id"], target)
    assert disk_blocks(tmp_path) - before < MIB
    assert client.delete(f"/local/models/{model['model_id']}").status_code == 204
    assert client.get("/local/models").json() == [] and catalogue_row_count(client.settings) == 0
    assert not (home / ".lmstudio" / "models").exists() or not any((home / ".lmstudio" / "models").rglob("*.gguf"))
    assert not (home / ".cache" / "huggingface" / "hub").exists() or not any((home / ".cache" / "huggingface" / "hub").iterdir())
    assert snapshot_without_content(ollama_home(home)) == ollama_before  # Ollama's own model, untouched
    assert blob.stat().st_size > 1024**3


def snapshot_without_content(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every file below `folder` with inode, size and mtime: 'untouched' for files too big to read in a test."""
    return {str(p.relative_to(folder)): (p.lstat().st_ino, p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if not p.is_dir()}


def test_deleting_a_model_removes_every_export_and_nothing_the_tools_made(client, home):
    theirs_source = write_gguf(home / "theirs.gguf", name="Theirs", tensors=6)
    plant_ollama_model(home, "theirs", "latest", theirs_source)
    lmstudio_theirs = home / ".lmstudio" / "models" / "someone" / "Other-GGUF" / "other.gguf"
    lmstudio_theirs.parent.mkdir(parents=True)
    write_gguf(lmstudio_theirs, name="Other", tensors=7)
    before = {name: snapshot(home / name) for name in (".ollama", ".lmstudio")}
    model = import_file(client, write_gguf(home / "mine.gguf", name="Mine")).json()
    for target in ("ollama", "lmstudio", "hf-cache"):
        export(client, model["model_id"], target)
    assert client.delete(f"/local/models/{model['model_id']}").status_code == 204
    assert {name: snapshot(home / name) for name in (".ollama", ".lmstudio")} == before
    assert lmstudio_theirs.exists() and not (home / ".cache" / "huggingface").exists()


def test_an_export_never_replaces_a_file_the_tool_already_has(client, home):
    model = import_file(client, write_gguf(home / "mine.gguf", name="Mine")).json()
    taken = home / ".lmstudio" / "models" / "someone" / "Repo" / "mine.gguf"
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"their own file")
    body = assert_error(client.post(f"/local/models/{model['model_id']}/exports",
                                    json={"target": "lmstudio", "name": "someone/Repo"}), 409, "FILE_IN_USE")
    assert str(taken) in body["message"] and taken.read_bytes() == b"their own file"
    assert client.get(f"/local/models/{model['model_id']}").json()["exports"] == []


# ------------------------------------------------------------------ import by link and register


def test_register_keeps_the_file_where_it_is_and_delete_never_removes_it(client, home):
    (home / "kept").mkdir()
    source = write_gguf(home / "kept" / "model.gguf", name="Kept")
    digest = sha256_of(source)
    response = client.post("/local/import", json={"file_path": str(source), "action": "register"})
    assert response.status_code == 201, response.text
    model = response.json()
    assert (model["file_path"], model["external"]) == (str(source), True)
    assert os.listdir(client.settings.models_dir) == []
    assert client.post("/local/import", json={"file_path": str(source), "action": "register"}).status_code == 200
    assert client.delete(f"/local/models/{model['model_id']}").status_code == 204
    assert sha256_of(source) == digest and catalogue_row_count(client.settings) == 0


def test_link_across_filesystems_is_a_clear_409_that_suggests_copy(client, home):
    shm = Path("/dev/shm")
    require(shm.is_dir() and os.stat(shm).st_dev != os.stat(client.settings.models_dir).st_dev,
            "no second filesystem at /dev/shm to link across (a tmpfs on every Linux machine of this kind)")
    source = write_gguf(shm / f"mm-test-{os.getpid()}.gguf")
    try:
        body = assert_error(client.post("/local/import", json={"file_path": str(source), "action": "link"}),
                            409, "CROSS_FILESYSTEM")
        assert "copy" in body["message"] and os.listdir(client.settings.models_dir) == []
        assert client.get("/local/models").json() == []
    finally:
        source.unlink()


def test_a_split_model_links_in_as_one_model(client, home):
    parts = write_split_model(home, "split-Q4_K_M", 3, name="Split")
    model, created = client.portal.call(
        lambda: client.app.state.local_storage.import_file(str(parts[0]), "link", part_paths=[str(p) for p in parts[1:]])
    )
    assert created and [p["sha256"] for p in model.metadata["parts"]] == [sha256_of(p) for p in parts]
    folder = Path(model.file_path).parent
    for part, info in zip(parts, model.metadata["parts"]):
        assert (folder / info["filename"]).stat().st_ino == part.stat().st_ino


def test_linking_a_split_model_that_is_already_in_the_library_answers_that_model(client, home):
    parts = write_split_model(home, "split-Q4_K_M", 2, name="Split")
    storage = client.app.state.local_storage
    first, created = client.portal.call(lambda: storage.import_file(str(parts[0]), "link", part_paths=[str(parts[1])]))
    again, created_again = client.portal.call(lambda: storage.import_file(str(parts[0]), "link", part_paths=[str(parts[1])]))
    assert created and not created_again and again.model_id == first.model_id
    assert catalogue_row_count(client.settings) == 1


def test_the_llama_cpp_run_command_asks_for_a_context_that_fits_the_target(client, home):
    model = import_file(client, write_model(home / "tiny-llama-F16.gguf", LLAMA_GQA)).json()  # trained for 32768
    client.settings.fit_ram_gb, client.settings.fit_vram_gb = 0.2, 0.0  # a small machine, RAM only
    fit = client.get(f"/local/models/{model['model_id']}/fit").json()
    assert fit["max_context_full_gpu"] is None and 0 < fit["max_context_in_ram"] < 32768
    shown = client.get(f"/local/models/{model['model_id']}").json()
    assert shown["run"]["llama.cpp"] == f"llama-server -m {model['file_path']} -c {fit['max_context_in_ram']}"


def test_link_and_register_check_the_path_before_anything_else(client, home):
    for action in ("link", "register"):
        assert_error(client.post("/local/import", json={"file_path": "//////", "action": action}), 403, "PATH_NOT_ALLOWED")
        body = {"file_path": "/////////", "action": action, "display_name": "0" * 200}
        assert_error(client.post("/local/import", json=body), 403, "PATH_NOT_ALLOWED")
    blob = home / "sha256-0123"
    write_gguf(blob)
    model = client.post("/local/import", json={"file_path": str(blob), "action": "link", "display_name": "x" * 200})
    assert model.status_code == 201 and Path(model.json()["file_path"]).name == "x" * 150 + ".gguf"


def test_an_ollama_name_with_a_trailing_newline_is_refused(client, home):
    model = import_file(client, write_gguf(home / "m.gguf")).json()
    assert_error(client.post(f"/local/models/{model['model_id']}/exports", json={"target": "ollama", "name": "m:q4\n"}),
                 400, "INVALID_FILE")


def test_the_fit_of_a_library_model_whose_header_cannot_be_sized_is_a_409(client, home):
    model = import_file(client, write_gguf(home / "no-shape.gguf")).json()  # no llama.embedding_length
    body = assert_error(client.get(f"/local/models/{model['model_id']}/fit"), 409, "MODEL_NOT_SIZABLE")
    assert "embedding_length" in body["message"]
    shown = client.get(f"/local/models/{model['model_id']}").json()  # its run command keeps the default context
    assert shown["run"]["llama.cpp"].endswith("-c 4096")


def test_removing_an_export_leaves_the_folders_the_tool_already_had_even_empty(client, home):
    theirs = home / ".lmstudio" / "models" / "someone" / "Repo"
    theirs.mkdir(parents=True)  # LM Studio's own, empty
    model = import_file(client, write_gguf(home / "mine.gguf", name="Mine")).json()
    made = export(client, model["model_id"], "lmstudio", name="someone/Repo")
    assert made["created_paths"] == [str(theirs / "mine.gguf")]
    assert client.delete(f"/local/models/{model['model_id']}/exports/lmstudio").status_code == 204
    assert theirs.is_dir() and list(theirs.iterdir()) == []
    made = export(client, model["model_id"], "lmstudio", name="fresh/Repo")  # here every folder is ours
    assert client.delete(f"/local/models/{model['model_id']}/exports/lmstudio").status_code == 204
    assert not (home / ".lmstudio" / "models" / "fresh").exists() and theirs.is_dir()


def test_removing_an_hf_cache_export_leaves_a_snapshot_file_the_person_put_in_its_place(client, home):
    model = import_file(client, write_gguf(home / "tiny.gguf")).json()
    made = export(client, model["model_id"], "hf-cache", name="someone/Tiny-GGUF")
    snapshot = next(Path(p) for p in made["created_paths"] if "snapshots" in Path(p).parts)
    snapshot.unlink()
    snapshot.symlink_to(home / "tiny.gguf")  # the person's own link now stands there
    assert client.delete(f"/local/models/{model['model_id']}/exports/hf-cache").status_code == 204
    assert snapshot.is_symlink() and os.readlink(snapshot) == str(home / "tiny.gguf")


def test_removing_an_ollama_export_keeps_what_changed_since(client, home):
    """A config blob whose bytes no longer hash to its name is not what the export wrote: it stays. A manifest
    edited since (Ollama re-tagged it, say) is not ours either: it stays, and so does the model blob it names."""
    model = import_file(client, write_gguf(home / "tiny.gguf", name="Tiny")).json()
    made = export(client, model["model_id"], "ollama", name="tiny:q4")
    manifest_path = Path(made["details"]["manifest"])
    manifest = json.loads(manifest_path.read_text())
    config_blob = ollama_home(home) / "blobs" / manifest["config"]["digest"].replace(":", "-")
    assert str(config_blob) in made["created_paths"]
    config_blob.write_bytes(b"someone else's bytes")
    assert client.delete(f"/local/models/{model['model_id']}/exports/ollama").status_code == 204
    assert not manifest_path.exists()  # unchanged: ours, removed
    assert config_blob.read_bytes() == b"someone else's bytes"

    config_blob.unlink()
    made = export(client, model["model_id"], "ollama", name="tiny:q4")
    manifest["annotations"] = {"edited": "by ollama"}
    manifest_path.write_text(json.dumps(manifest))
    assert client.delete(f"/local/models/{model['model_id']}/exports/ollama").status_code == 204
    assert json.loads(manifest_path.read_text())["annotations"] == {"edited": "by ollama"}
    model_blob = ollama_home(home) / "blobs" / f"sha256-{model['file_hash']}"
    assert model_blob.stat().st_ino == os.stat(model["file_path"]).st_ino  # still named by that manifest
    assert config_blob.exists()


def test_removing_an_lm_studio_export_keeps_a_file_the_person_put_in_its_place(client, home):
    model = import_file(client, write_gguf(home / "mine.gguf", name="Mine")).json()
    made = export(client, model["model_id"], "lmstudio", name="someone/Repo")
    [link] = map(Path, made["created_paths"])
    link.unlink()
    link.write_bytes(b"their own download")
    assert client.delete(f"/local/models/{model['model_id']}").status_code == 204
    assert link.read_bytes() == b"their own download"
