"""`GET /local/discover` and `POST /local/discover/import` (+) over HTTP, on a fake home of every tool."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.app.test_local_models import assert_error
from tests.conftest import make_settings
from tests.fake_tool_homes import build_homes, file_states, restore_permissions, use_homes


@pytest.fixture
def homes(tmp_path, monkeypatch):
    built = build_homes(tmp_path)
    use_homes(monkeypatch, built)
    # The service runs as root here and reads a mode-000 folder anyway; tests/core/test_discovery.py covers it.
    restore_permissions(built)
    shutil.rmtree(built.unreadable)
    del built.expected_skips[str(built.unreadable)]
    return built


@pytest.fixture
def settings(tmp_path, homes):
    return make_settings(tmp_path, tmp_path, LIBRARY_SCAN_DIRS=str(homes.scan_dir))


def test_discover_lists_the_valid_models_and_the_skipped_entries(client, homes):
    response = client.get("/local/discover")

    assert response.status_code == 200, response.text
    body = response.json()
    assert sorted((m["tool"], m["name"]) for m in body["models"]) == sorted(homes.expected)
    assert sorted(skip["path"] for skip in body["skipped"]) == sorted(homes.expected_skips)
    llama = next(m for m in body["models"] if m["name"] == "llama3.2:latest")
    assert llama["also_named"] == ["ollama llama3.2:3b"]
    assert llama["in_library"] is False and llama["zero_copy"] is True and llama["size_bytes"] == os.stat(llama["path"]).st_size


def test_discover_import_links_every_model_once(client, homes, settings):
    paths = [model["path"] for model in client.get("/local/discover").json()["models"]]
    before = file_states(homes.home)

    first = client.post("/local/discover/import", json={"paths": paths})

    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["imported"], body["already_in_library"], body["failed"]) == (len(paths), 0, 0)
    found = {model["path"]: model for model in client.get("/local/discover").json()["models"]}
    for item in body["results"]:
        assert os.stat(item["model"]["file_path"]).st_ino == os.stat(item["path"]).st_ino  # a link, not a copy
        assert item["model"]["original_repo_id"] == found[item["path"]]["repo_id"]  # what the layout says
    assert any(found[path]["repo_id"] for path in paths)
    projectors = {found[path]["projector_path"] for path in paths if found[path]["projector_path"]}
    assert projectors  # a vision model's projector comes along as a model of its own
    assert len(client.get("/local/models").json()) == len(paths) + len(projectors)
    listed = client.get("/local/discover").json()["models"]
    assert all(model["in_library"] for model in listed)

    second = client.post("/local/discover/import", json={"paths": paths, "action": "link"}).json()
    assert [item["status"] for item in second["results"]] == ["already_in_library"] * len(paths)
    assert [item["model"]["model_id"] for item in second["results"]] == [item["model"]["model_id"] for item in body["results"]]
    assert len(client.get("/local/models").json()) == len(paths) + len(projectors)
    assert file_states(homes.home) == before


def test_discover_import_refuses_a_path_discover_does_not_list(client, homes, tmp_path):
    response = client.post("/local/discover/import", json={"paths": ["/etc/hostname"], "action": "copy"})

    assert response.status_code == 200, response.text
    (item,) = response.json()["results"]
    assert (item["status"], item["error_code"], item["model"]) == ("failed", "PATH_NOT_ALLOWED", None)
    assert client.get("/local/models").json() == []


@pytest.mark.parametrize(
    "body",
    [{"paths": []}, {"paths": ["/x.gguf"], "action": "move"}, {"paths": ["/x.gguf"], "extra": 1}, {"paths": "/x.gguf"}, {}],
)
def test_discover_import_refuses_a_malformed_body(client, homes, body):
    assert_error(client.post("/local/discover/import", json=body), 422, "VALIDATION_ERROR")


def test_discover_routes_need_the_token(client, homes):
    client.headers.pop("Authorization")
    assert_error(client.get("/local/discover"), 401, "INVALID_TOKEN")
    assert_error(client.post("/local/discover/import", json={"paths": ["/x.gguf"]}), 401, "INVALID_TOKEN")


def test_discover_import_brings_the_projector_and_links_the_model_to_it(client, homes):
    vision = homes.expected[("ollama", "hf.co/bartowski/Vision-GGUF:Q8_0")]["path"]
    found = {model["path"]: model for model in client.get("/local/discover").json()["models"]}
    projector_path = found[vision]["projector_path"]
    assert projector_path  # Ollama's projector layer: a blob neither named mmproj nor beside the model
    [item] = client.post("/local/discover/import", json={"paths": [vision]}).json()["results"]
    assert item["status"] == "imported", item
    models = {m["model_id"]: m for m in client.get("/local/models").json()}
    projector = models[item["model"]["projector_model_id"]]
    assert os.stat(projector["file_path"]).st_ino == os.stat(projector_path).st_ino  # linked, not copied
    assert "--mmproj" in client.get(f"/local/models/{item['model']['model_id']}").json()["run"]["llama.cpp"]
