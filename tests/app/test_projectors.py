"""Issue 11: vision models carry their projector. Providers list a repo's `mmproj` files; a variant download
fetches the matching projector as its own verified model and links the model to it; exports and run hints
carry it. Over real HTTP, with the fake Hub behind the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from model_manager.core.gguf_format import is_mmproj
from model_manager.core.models import PROJECTOR_NAME_PATTERN
from model_manager.core.services import tool_homes
from tests.conftest import LiveServer
from tests.downloads.helpers import download_settings, served, wait_until_sync
from tests.fake_hub.fixtures import fake_hub, hub_env  # noqa: F401 - fixtures
from tests.fake_hub.server import FakeRepo
from tests.gguf_factory import sha256_of, write_gguf, write_mmproj

BASE = "vision/Tiny-VL"
REPO = "vision/Tiny-VL-GGUF"
F16_PROJECTOR = "mmproj-Tiny-VL-f16.gguf"
Q8_PROJECTOR = "mmproj-Tiny-VL-Q8_0.gguf"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home folder where Ollama and LM Studio keep their files in their default places."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    for name in ("OLLAMA_MODELS", "HF_HUB_CACHE", "LLAMA_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return folder


@pytest.fixture
def repo_files(hub_env, tmp_path) -> dict[str, bytes]:
    """A vision repo on the fake Hub: two variants and two projectors (F16 and Q8_0), all real GGUF files."""
    made = tmp_path / "made"
    made.mkdir()
    files = {
        "Tiny-VL-Q4_K_M.gguf": write_gguf(made / "a.gguf", name="Tiny VL", file_type=15).read_bytes(),
        "Tiny-VL-Q8_0.gguf": write_gguf(made / "b.gguf", name="Tiny VL", file_type=7).read_bytes(),
        F16_PROJECTOR: write_mmproj(made / "c.gguf", name="Tiny VL projector").read_bytes(),
        Q8_PROJECTOR: write_mmproj(made / "d.gguf", name="Tiny VL projector", file_type=7).read_bytes(),
    }
    relation = f"base_model:quantized:{BASE}"
    hub_env.add_repo(FakeRepo(BASE, files={"config.json": b"{}"}))
    hub_env.add_repo(FakeRepo(REPO, files=files, tags=["gguf", relation], card_data={"base_model": BASE}))
    return files


@pytest.fixture
def server(hub_env, tmp_path, home, repo_files):
    live = LiveServer(download_settings(tmp_path, hub_env)).start()
    live.hub = hub_env
    yield live
    live.stop()


def download(server: LiveServer, expected_status: int = 202, **body) -> dict:
    with server.client() as client:
        response = client.post("/local/download", json={"repo_id": REPO, **body})
    assert response.status_code == expected_status, response.text
    return response.json()


def finished(server: LiveServer, download_id: str) -> dict:
    with server.client() as client:
        wait_until_sync(
            lambda: client.get(f"/local/downloads/{download_id}").json()["status"] in ("completed", "failed"),
            what=f"download {download_id}",
        )
        status = client.get(f"/local/downloads/{download_id}").json()
    assert status["status"] == "completed", status
    return status


def get(server: LiveServer, path: str):
    with server.client() as client:
        response = client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def models_by_file(server: LiveServer) -> dict[str, dict]:
    return {Path(model["file_path"]).name: model for model in get(server, "/local/models")}


def assert_verified(model: dict, content: bytes) -> None:
    """The model's file on disk holds exactly the Hub's bytes: its SHA-256 is the Hub's and the row's."""
    assert sha256_of(model["file_path"]) == hashlib.sha256(content).hexdigest() == model["file_hash"]


def test_providers_list_the_projectors_with_their_sizes(server, repo_files):
    [provider] = get(server, f"/hub/model/{BASE}/gguf-providers")
    assert provider["projectors"] == [
        {"filename": Q8_PROJECTOR, "size_bytes": len(repo_files[Q8_PROJECTOR])},
        {"filename": F16_PROJECTOR, "size_bytes": len(repo_files[F16_PROJECTOR])},
    ]
    assert [v["quantization"] for v in provider["variants"]] == ["Q4_K_M", "Q8_0"]  # projectors are no variant


def test_a_variant_download_fetches_its_projector_as_a_second_verified_model_and_links_them(server, repo_files, home):
    accepted = download(server, quantization="Q4_K_M")
    assert accepted["projector"] == F16_PROJECTOR  # F16 is preferred over Q8_0
    assert accepted["projector_model_id"] is None and accepted["projector_download_id"]
    model_status = finished(server, accepted["download_id"])
    projector_status = finished(server, accepted["projector_download_id"])
    assert projector_status["files"] == [F16_PROJECTOR] and model_status["files"] == ["Tiny-VL-Q4_K_M.gguf"]

    models = models_by_file(server)
    assert set(models) == {"Tiny-VL-Q4_K_M.gguf", F16_PROJECTOR}
    model, projector = models["Tiny-VL-Q4_K_M.gguf"], models[F16_PROJECTOR]
    assert_verified(model, repo_files["Tiny-VL-Q4_K_M.gguf"])
    assert_verified(projector, repo_files[F16_PROJECTOR])
    assert projector["metadata"]["is_mmproj"] is True
    assert model["projector_model_id"] == projector["model_id"] == projector_status["model_id"]
    shown = get(server, f"/local/models/{model['model_id']}")
    assert shown["projector_model_id"] == projector["model_id"]
    assert f"-m {model['file_path']} --mmproj {projector['file_path']} -c " in shown["run"]["llama.cpp"]

    # The projector already in the library is not fetched again: the other variant links to the same one.
    served_before = served(server.hub, F16_PROJECTOR)
    again = download(server, quantization="Q8_0")
    assert (again["projector"], again["projector_download_id"]) == (F16_PROJECTOR, None)
    assert again["projector_model_id"] == projector["model_id"]
    other = finished(server, again["download_id"])
    assert served(server.hub, F16_PROJECTOR) == served_before
    assert len(get(server, "/local/models")) == 3
    assert get(server, f"/local/models/{other['model_id']}")["projector_model_id"] == projector["model_id"]


def test_include_projector_false_fetches_only_the_model(server):
    accepted = download(server, quantization="Q4_K_M", include_projector=False)
    assert accepted["projector"] is None and accepted["projector_download_id"] is None
    finished(server, accepted["download_id"])
    [model] = get(server, "/local/models")
    assert model["projector_model_id"] is None and "--mmproj" not in model["run"]["llama.cpp"]
    assert served(server.hub, F16_PROJECTOR) == served(server.hub, Q8_PROJECTOR) == 0


def test_projector_picks_one_and_a_name_that_is_not_a_projector_of_the_repo_is_refused(server, repo_files):
    with server.client() as client:
        for body, status, code in [
            ({"quantization": "Q4_K_M", "projector": "mmproj-other.gguf"}, 404, "NOT_FOUND"),
            ({"quantization": "Q4_K_M", "projector": "Tiny-VL-Q8_0.gguf"}, 400, "INVALID_FILE"),
            ({"quantization": "Q4_K_M", "projector": "../mmproj-x.gguf"}, 400, "INVALID_FILE"),
            ({"quantization": "Q4_K_M", "projector": Q8_PROJECTOR, "include_projector": False}, 400, "INVALID_FILE"),
            ({"filename": "Tiny-VL-Q4_K_M.gguf", "projector": Q8_PROJECTOR}, 400, "INVALID_FILE"),
        ]:
            response = client.post("/local/download", json={"repo_id": REPO, **body})
            assert (response.status_code, response.json()["error_code"]) == (status, code), body
        assert client.get("/local/downloads").json() == []  # nothing was queued

    accepted = download(server, quantization="Q4_K_M", projector=Q8_PROJECTOR)
    assert accepted["projector"] == Q8_PROJECTOR
    finished(server, accepted["download_id"])
    finished(server, accepted["projector_download_id"])
    models = models_by_file(server)
    assert set(models) == {"Tiny-VL-Q4_K_M.gguf", Q8_PROJECTOR}
    assert_verified(models[Q8_PROJECTOR], repo_files[Q8_PROJECTOR])
    assert models["Tiny-VL-Q4_K_M.gguf"]["projector_model_id"] == models[Q8_PROJECTOR]["model_id"]


def _downloaded_pair(server: LiveServer) -> tuple[dict, dict]:
    accepted = download(server, quantization="Q4_K_M")
    finished(server, accepted["download_id"])
    finished(server, accepted["projector_download_id"])
    models = models_by_file(server)
    return models["Tiny-VL-Q4_K_M.gguf"], models[F16_PROJECTOR]


def _export(server: LiveServer, model_id: str, target: str, **body) -> dict:
    with server.client() as client:
        response = client.post(f"/local/models/{model_id}/exports", json={"target": target, **body})
    assert response.status_code == 201, response.text
    return response.json()


def test_lm_studio_and_ollama_exports_carry_the_projector(server, home):
    model, projector = _downloaded_pair(server)

    lmstudio = _export(server, model["model_id"], "lmstudio")
    folder = home / ".lmstudio" / "models" / "vision" / "Tiny-VL-GGUF"
    assert sorted(p.name for p in folder.iterdir()) == sorted([F16_PROJECTOR, "Tiny-VL-Q4_K_M.gguf"])
    assert os.stat(folder / F16_PROJECTOR).st_ino == os.stat(projector["file_path"]).st_ino  # a link, not a copy
    assert str(folder / F16_PROJECTOR) in lmstudio["created_paths"]

    ollama = _export(server, model["model_id"], "ollama")
    store = home / ".ollama" / "models"
    manifest = json.loads(Path(ollama["details"]["manifest"]).read_text())
    layers = {layer["mediaType"]: layer for layer in manifest["layers"]}
    assert set(layers) == {"application/vnd.ollama.image.model", "application/vnd.ollama.image.projector"}
    assert layers["application/vnd.ollama.image.projector"]["digest"] == f"sha256:{projector['file_hash']}"
    for layer in [*manifest["layers"], manifest["config"]]:
        blob = store / "blobs" / layer["digest"].replace(":", "-")
        assert "sha256:" + sha256_of(blob) == layer["digest"] and blob.stat().st_size == layer["size"]
    config = json.loads((store / "blobs" / manifest["config"]["digest"].replace(":", "-")).read_text())
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]

    # The projector model deleted first: the model's exports still come off cleanly, with the projector links.
    with server.client() as client:
        assert client.delete(f"/local/models/{projector['model_id']}").status_code == 204
        assert client.get(f"/local/models/{model['model_id']}").json()["projector_model_id"] is None
        assert client.delete(f"/local/models/{model['model_id']}/exports/ollama").status_code == 204
        assert not (store / "blobs" / f"sha256-{projector['file_hash']}").exists()
        assert not (store / "manifests").exists() or not any(p.is_file() for p in (store / "manifests").rglob("*"))
        again = _export(server, model["model_id"], "ollama")  # now without a projector to carry
        assert [layer["mediaType"] for layer in json.loads(Path(again["details"]["manifest"]).read_text())["layers"]] == [
            "application/vnd.ollama.image.model"
        ]
        assert client.delete(f"/local/models/{model['model_id']}").status_code == 204
    assert not folder.exists()  # the LM Studio links, the projector's too, went with the model
    assert not any(p.is_file() for p in (store / "blobs").rglob("*"))


def test_an_hf_cache_export_carries_the_projector(server, home):
    from huggingface_hub import hf_hub_download

    model, projector = _downloaded_pair(server)
    _export(server, model["model_id"], "hf-cache")
    cache = tool_homes.hf_hub_cache()  # HF_HOME/hub: hub_env sets HF_HOME
    path = hf_hub_download(REPO, F16_PROJECTOR, cache_dir=cache, local_files_only=True)
    assert sha256_of(path) == projector["file_hash"]
    with server.client() as client:
        assert client.delete(f"/local/models/{model['model_id']}").status_code == 204
    assert not any(p.is_file() or p.is_symlink() for p in cache.rglob("*"))


def test_a_projector_link_shared_by_two_exported_variants_goes_with_the_last_of_them(server, home):
    first, projector = _downloaded_pair(server)
    accepted = download(server, quantization="Q8_0")
    second = get(server, f"/local/models/{finished(server, accepted['download_id'])['model_id']}")
    assert second["projector_model_id"] == projector["model_id"]
    folder = home / ".lmstudio" / "models" / "vision" / "Tiny-VL-GGUF"
    blob = home / ".ollama" / "models" / "blobs" / f"sha256-{projector['file_hash']}"
    for model in (first, second):
        _export(server, model["model_id"], "lmstudio")  # both in the same folder, beside one projector
        _export(server, model["model_id"], "ollama", name=f"tiny-vl:{model['metadata']['quantization'].lower()}")
    with server.client() as client:
        assert client.delete(f"/local/models/{first['model_id']}").status_code == 204
        assert (folder / F16_PROJECTOR).is_file() and blob.is_file()  # the second still needs them
        assert client.delete(f"/local/models/{second['model_id']}/exports/lmstudio").status_code == 204
        assert client.delete(f"/local/models/{second['model_id']}/exports/ollama").status_code == 204
    assert not folder.exists() and not blob.exists()
    assert sha256_of(projector["file_path"]) == projector["file_hash"]  # the library's projector is untouched


def test_a_model_imported_by_link_from_an_lm_studio_folder_is_linked_to_the_projector_beside_it(server, tmp_path):
    folder = tmp_path / "incoming" / "lmstudio" / "models" / "vision" / "Tiny-VL-GGUF"  # inside IMPORT_ALLOWED_DIRS
    folder.mkdir(parents=True)
    first = write_gguf(folder / "Tiny-VL-Q4_K_M.gguf", name="Tiny VL")
    projector = write_mmproj(folder / "mmproj-Tiny-VL-f16.gguf")
    second = write_gguf(folder / "Tiny-VL-Q8_0.gguf", name="Tiny VL", file_type=7)
    with server.client() as client:
        def link(path: Path) -> dict:
            response = client.post("/local/import", json={"file_path": str(path), "action": "link"})
            assert response.status_code == 201, response.text
            return response.json()

        model_before = link(first)  # before its projector: linked when the projector comes
        projector_model = link(projector)
        model_after = link(second)  # after it: linked at once
        assert model_after["projector_model_id"] == projector_model["model_id"]
        for model in (model_before, model_after):
            shown = client.get(f"/local/models/{model['model_id']}").json()
            assert shown["projector_model_id"] == projector_model["model_id"]
            assert f"--mmproj {projector_model['file_path']}" in shown["run"]["llama.cpp"]
        assert client.get(f"/local/models/{projector_model['model_id']}").json()["projector_model_id"] is None


@pytest.mark.parametrize(
    "name",
    ["mmproj-x.gguf", "f/mmproj.gguf", "x.mmproj-Q8_0.gguf", "MMProj-F16.gguf", "2mmproj.gguf", "a_mmproj_b.gguf",
     "mmprojx.gguf", "xmmproj.gguf", "mmproj/x.gguf", "model-Q4_K_M.gguf"],
)
def test_the_documented_projector_pattern_reads_names_as_the_library_does(name):
    assert bool(re.match(PROJECTOR_NAME_PATTERN, name)) == is_mmproj(name)
