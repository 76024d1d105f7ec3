"""Discover: the models Ollama, LM Studio, the HF cache, llama.cpp and LIBRARY_SCAN_DIRS hold, on fake homes
built in each tool's documented layout with real GGUF files; and importing them by link, once, without a copy."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from model_manager.core.catalogue import Catalogue
from model_manager.core.services.discovery import Discovery, hf_cache, llama_cpp, lmstudio, ollama
from model_manager.core.services.local_storage import LocalStorage
from tests.app.test_local_models import other_filesystem_dir  # noqa: F401 (fixture)
from tests.conftest import make_settings
from tests.fake_tool_homes import (
    allocated_bytes,
    as_user_bound_by_modes,
    build_homes,
    file_states,
    ollama_manifest,
    ollama_model,
    restore_permissions,
    use_homes,
    write_large_gguf,
)
from tests.gguf_factory import write_gguf, write_split_model


@pytest.fixture
def homes(tmp_path, monkeypatch):
    built = build_homes(tmp_path)
    use_homes(monkeypatch, built)
    yield built
    restore_permissions(built)


@pytest.fixture
def discovery_settings(tmp_path, homes):
    # Imports may read anywhere below tmp_path: the fake home and the scanned folder.
    return make_settings(tmp_path, tmp_path, LIBRARY_SCAN_DIRS=str(homes.scan_dir))


@pytest.fixture
def storage(discovery_settings):
    for folder in (discovery_settings.models_dir, discovery_settings.downloads_dir, discovery_settings.data_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    catalogue = Catalogue(discovery_settings.catalogue_file)
    catalogue.open()
    yield LocalStorage(discovery_settings, catalogue)
    catalogue.close()


@pytest.fixture
def discovery(discovery_settings, storage):
    return Discovery(discovery_settings, storage)


def without_locked_folder(homes) -> None:
    """Remove the mode-000 folder: root reads it anyway in the test's own thread (see `as_user_bound_by_modes`)."""
    restore_permissions(homes)
    shutil.rmtree(homes.unreadable)


def by_key(result):
    return {(model.tool, model.name): model for model in result.models}


# ------------------------------------------------------------------ what discover lists


def test_discover_lists_exactly_the_valid_models_of_every_tool(homes, discovery):
    result = as_user_bound_by_modes(lambda: asyncio.run(discovery.discover()))

    found = by_key(result)
    assert sorted(found) == sorted(homes.expected)
    for key, facts in homes.expected.items():
        model = found[key]
        assert model.path == facts["path"]
        assert model.part_paths == facts.get("part_paths", [facts["path"]])
        assert model.quantization == facts["quantization"]
        assert model.repo_id == facts.get("repo_id", model.repo_id)
        assert model.sha256 == facts.get("sha256")
        assert model.size_bytes == sum(os.stat(path).st_size for path in model.part_paths)
        assert model.also_named == facts.get("also_named", [])
        assert not model.in_library and model.library_model_id is None
        assert model.zero_copy and model.import_blocked is None
    assert found[("lmstudio", "lmstudio-community/Qwen-GGUF/qwen-Q8_0.gguf")].projector_path == str(
        homes.home / ".lmstudio" / "models" / "lmstudio-community" / "Qwen-GGUF" / "mmproj-qwen-F16.gguf"
    )
    vision = found[("ollama", "hf.co/bartowski/Vision-GGUF:Q8_0")]
    assert vision.projector_path is not None and Path(vision.projector_path).name.startswith("sha256-")
    assert vision.architecture == "gemma3"


def test_discover_skips_what_it_cannot_use_with_the_reason(homes, discovery):
    result = as_user_bound_by_modes(lambda: asyncio.run(discovery.discover()))

    reasons = {skip.path: skip.reason for skip in result.skipped}
    assert sorted(reasons) == sorted(homes.expected_skips)
    for path, expected in homes.expected_skips.items():
        assert expected in reasons[path], (path, reasons[path])
    assert {(place.tool, place.exists) for place in result.searched} == {
        ("ollama", True), ("lmstudio", True), ("hf-cache", True), ("llama.cpp", True), ("folder", True)
    }


def test_a_folder_the_thread_may_not_read_is_skipped_and_the_rest_still_listed(homes, discovery):
    # The same fake home, read once with file modes binding (EACCES) and once as plain root (which may read
    # everything): the locked publisher's model appears only in the second listing.
    bound = as_user_bound_by_modes(lambda: asyncio.run(discovery.discover()))
    as_root = asyncio.run(discovery.discover()) if os.geteuid() == 0 else None

    assert ("lmstudio", "locked-publisher/Secret-GGUF/secret-Q4_0.gguf") not in by_key(bound)
    assert any(skip.path == str(homes.unreadable) and "Permission denied" in skip.reason for skip in bound.skipped)
    if as_root is not None:
        assert ("lmstudio", "locked-publisher/Secret-GGUF/secret-Q4_0.gguf") in by_key(as_root)


def test_a_tool_folder_that_is_a_file_is_skipped(tmp_path, monkeypatch, homes, discovery):
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "not-a-folder" / "models"))
    (tmp_path / "not-a-folder").write_text("a file")
    without_locked_folder(homes)

    result = asyncio.run(discovery.discover())

    assert not [model for model in result.models if model.tool == "ollama"]
    assert any(skip.tool == "ollama" and "part of this path is a file" in skip.reason for skip in result.skipped)


# ------------------------------------------------------------------ where each tool keeps its models


def test_each_tool_folder_follows_its_variable_then_the_home(tmp_path):
    home = tmp_path / "h"
    assert ollama.store_root({}, home) == home / ".ollama" / "models"
    assert ollama.store_root({"OLLAMA_MODELS": "/srv/ollama"}, home) == Path("/srv/ollama")
    assert hf_cache.cache_root({}, home) == home / ".cache" / "huggingface" / "hub"
    assert hf_cache.cache_root({"HF_HOME": "/x"}, home) == Path("/x/hub")
    assert hf_cache.cache_root({"HF_HOME": "/x", "HF_HUB_CACHE": "/y"}, home) == Path("/y")
    assert llama_cpp.cache_root({}, home) == home / ".cache" / "llama.cpp"
    assert llama_cpp.cache_root({"LLAMA_CACHE": "/z"}, home) == Path("/z")


def test_lmstudio_home_is_the_pointer_then_the_old_place_then_the_new(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    assert lmstudio.models_root({}, home) == home / ".lmstudio" / "models"
    (home / ".cache" / "lm-studio").mkdir(parents=True)
    assert lmstudio.models_root({}, home) == home / ".cache" / "lm-studio" / "models"
    (home / ".lmstudio-home-pointer").write_text(f"{tmp_path / 'elsewhere'}\n")
    assert lmstudio.models_root({}, home) == tmp_path / "elsewhere" / "models"


def test_ollama_names_read_as_ollama_list_shows_them():
    assert ollama.display_name("registry.ollama.ai", "library", "llama3.2", "latest") == "llama3.2:latest"
    assert ollama.display_name("registry.ollama.ai", "someone", "mistral", "7b") == "someone/mistral:7b"
    assert ollama.display_name("hf.co", "bartowski", "Foo-GGUF", "Q4_K_M") == "hf.co/bartowski/Foo-GGUF:Q4_K_M"


def test_tool_variables_point_discover_elsewhere(tmp_path, monkeypatch, homes, discovery):
    without_locked_folder(homes)
    monkeypatch.setenv("OLLAMA_MODELS", str(homes.ollama))  # the same store, named by the variable
    elsewhere = tmp_path / "hf-elsewhere"
    monkeypatch.setenv("HF_HOME", str(elsewhere))  # an empty cache: the default one is no longer read

    result = asyncio.run(discovery.discover())

    tools = {model.tool for model in result.models}
    assert "ollama" in tools and "hf-cache" not in tools
    assert ("hf-cache", str(elsewhere / "hub"), False) in {(p.tool, p.path, p.exists) for p in result.searched}


# ------------------------------------------------------------------ importing what was found


async def test_link_import_adds_each_model_once_and_leaves_the_tools_files_untouched(homes, discovery, storage):
    without_locked_folder(homes)
    listed = await discovery.discover()
    before = {**file_states(homes.home), **file_states(homes.scan_dir)}

    first = await discovery.import_found([model.path for model in listed.models], "link")

    assert [item.status for item in first.results] == ["imported"] * len(homes.expected), first.results
    for model, item in zip(listed.models, first.results):
        assert item.path == model.path
        library_file = os.stat(item.model.file_path)
        assert (library_file.st_dev, library_file.st_ino) == (os.stat(model.path).st_dev, os.stat(model.path).st_ino)
        assert item.model.file_path.startswith(str(storage.models_dir))
        assert len(item.model.metadata.get("parts") or [None]) == len(model.part_paths)
    projectors = [model.projector_path for model in listed.models if model.projector_path]
    assert projectors and all(item.model.projector_model_id for item in first.results
                              if next(m for m in listed.models if m.path == item.path).projector_path)
    assert len(await storage.list_models()) == len(homes.expected) + len(projectors)  # projectors came along

    again = await discovery.discover()
    assert all(model.in_library for model in again.models)
    assert {model.path: model.library_model_id for model in again.models} == {
        item.path: item.model.model_id for item in first.results
    }
    second = await discovery.import_found([model.path for model in listed.models], "link")
    assert [item.status for item in second.results] == ["already_in_library"] * len(homes.expected), [i for i in second.results if i.status == "failed"]
    assert len(await storage.list_models()) == len(homes.expected) + len(projectors)
    assert {**file_states(homes.home), **file_states(homes.scan_dir)} == before


async def test_a_copy_is_recognised_by_the_sha256_the_layout_names(homes, discovery, storage):
    without_locked_folder(homes)
    listed = by_key(await discovery.discover())
    named = [listed[("ollama", "llama3.2:latest")], listed[("hf-cache", "org/Phi-GGUF/phi-Q5_K_M.gguf")]]
    unnamed = listed[("lmstudio", "lmstudio-community/Qwen-GGUF/qwen-Q8_0.gguf")]

    result = await discovery.import_found([model.path for model in [*named, unnamed]], "copy")

    assert [item.status for item in result.results] == ["imported"] * 3
    again = by_key(await discovery.discover())
    for model, item in zip(named, result.results):
        assert os.stat(item.model.file_path).st_ino != os.stat(model.path).st_ino  # a copy: another inode
        assert again[(model.tool, model.name)].library_model_id == item.model.model_id
    # LM Studio's layout names no hash, and discover never reads whole files to find one.
    assert not again[(unnamed.tool, unnamed.name)].in_library


async def test_only_paths_discover_lists_can_be_imported(homes, discovery, storage, tmp_path):
    without_locked_folder(homes)
    other = write_gguf(tmp_path / "anything.gguf")  # inside IMPORT_ALLOWED_DIRS, yet not a tool's model

    result = await discovery.import_found([str(other), "/etc/passwd", str(other)], "link")

    assert [(item.path, item.status, item.error_code) for item in result.results] == [
        (str(other), "failed", "PATH_NOT_ALLOWED"),
        ("/etc/passwd", "failed", "PATH_NOT_ALLOWED"),
    ]
    assert await storage.list_models() == []


async def test_link_import_across_filesystems_fails_clearly_and_says_copy(tmp_path, monkeypatch, homes, storage, other_filesystem_dir):
    without_locked_folder(homes)
    write_gguf(other_filesystem_dir / "far-Q4_0.gguf", name="Far")
    settings = make_settings(tmp_path, other_filesystem_dir, LIBRARY_SCAN_DIRS=str(other_filesystem_dir))
    discovery = Discovery(settings, storage)
    monkeypatch.setattr(storage, "settings", settings)  # the library reads IMPORT_ALLOWED_DIRS from its settings

    far = by_key(await discovery.discover())[("folder", "far-Q4_0.gguf")]
    assert not far.zero_copy
    result = await discovery.import_found([far.path], "link")

    item = result.results[0]
    assert (item.status, item.error_code) == ("failed", "CROSS_FILESYSTEM")
    assert "copy" in item.message
    assert await storage.list_models() == []


async def test_link_importing_a_1_gib_ollama_blob_adds_no_disk_blocks(tmp_path, monkeypatch, discovery_settings, storage):
    home = tmp_path / "big-home"
    monkeypatch.setenv("HOME", str(home))
    store = home / ".ollama" / "models"
    (store / "blobs").mkdir(parents=True)
    digest = write_large_gguf(tmp_path / "large.gguf", 1 << 30)
    blob = store / "blobs" / f"sha256-{digest}"
    shutil.move(tmp_path / "large.gguf", blob)
    ollama_manifest(store, "registry.ollama.ai", "library", "large", "latest", [("model", digest, blob.stat().st_size)])
    discovery = Discovery(discovery_settings.model_copy(update={"library_scan_dirs_raw": ""}), storage)
    places = (home, storage.models_dir, discovery_settings.data_dir)
    before = allocated_bytes(*places)
    assert before >= 1 << 30  # really written, not a hole: a copy would show

    result = await discovery.import_found([str(blob)], "link")

    assert result.results[0].status == "imported", result.results[0]
    assert allocated_bytes(*places) - before < 1 << 20
    assert os.stat(result.results[0].model.file_path).st_ino == os.stat(blob).st_ino
    assert result.results[0].model.file_hash == digest  # the library hashed the bytes: the name was right


async def test_discover_lists_an_ollama_model_the_library_exported_as_in_the_library(tmp_path, monkeypatch, discovery_settings, storage):
    # A blob that is a hard link to a library file (what an export makes) is the library's own file.
    home = tmp_path / "h2"
    monkeypatch.setenv("HOME", str(home))
    blob = ollama_model(home / ".ollama" / "models", tmp_path / "s", "registry.ollama.ai", "library", "mine", "latest")
    model, _created = await storage.import_file(str(blob), "copy", None, library_name="mine.gguf")
    blob.unlink()
    os.link(model.file_path, blob)

    listed = await Discovery(discovery_settings, storage).discover()

    (found,) = [m for m in listed.models if m.tool == "ollama"]
    assert found.in_library and found.library_model_id == model.model_id


async def test_a_model_outside_import_allowed_dirs_is_listed_as_blocked_and_refused(tmp_path, monkeypatch, homes, storage):
    without_locked_folder(homes)
    settings = make_settings(tmp_path, homes.scan_dir, LIBRARY_SCAN_DIRS=str(homes.scan_dir))  # the home is not allowed
    monkeypatch.setattr(storage, "settings", settings)
    discovery = Discovery(settings, storage)

    found = by_key(await discovery.discover())
    llama, mine = found[("ollama", "llama3.2:latest")], found[("folder", "mistral/mistral-IQ4_XS.gguf")]
    assert "IMPORT_ALLOWED_DIRS" in llama.import_blocked and mine.import_blocked is None
    result = await discovery.import_found([llama.path, mine.path], "link")

    assert [(item.status, item.error_code) for item in result.results] == [("failed", "PATH_NOT_ALLOWED"), ("imported", None)]


async def test_register_import_keeps_every_file_where_the_tool_has_it(homes, discovery, storage):
    without_locked_folder(homes)
    listed = await discovery.discover()
    before = {**file_states(homes.home), **file_states(homes.scan_dir)}

    result = await discovery.import_found([model.path for model in listed.models], "register")

    assert result.imported == len(homes.expected), result.results
    assert os.listdir(storage.models_dir) == []  # nothing linked or copied into MODELS_DIR
    for model, item in zip(listed.models, result.results):
        assert os.path.samefile(item.model.file_path, model.path)
    assert all(model.in_library for model in (await discovery.discover()).models)
    assert {**file_states(homes.home), **file_states(homes.scan_dir)} == before


async def test_a_split_set_with_a_part_missing_or_broken_is_skipped_whole(homes, discovery):
    without_locked_folder(homes)
    incomplete = write_split_model(homes.scan_dir, "half-Q4_0", 3, name="Half")
    incomplete[1].unlink()
    broken = write_split_model(homes.scan_dir, "bad-Q4_0", 2, name="Bad")
    broken[1].write_bytes(b"GGUF" + b"\0" * 8)

    result = await discovery.discover()

    names = {model.name for model in result.models}
    assert not any(name.startswith(("half-", "bad-")) for name in names)
    reasons = {skip.path: skip.reason for skip in result.skipped}
    assert reasons[str(incomplete[0])] == "split model with parts [2] of 3 missing"
    assert reasons[str(broken[1])].startswith(f"part 2 of 2 of {broken[0].name}: ")


async def test_a_scanned_folder_holding_models_dir_leaves_the_library_out(tmp_path, homes, storage):
    without_locked_folder(homes)
    settings = make_settings(tmp_path, tmp_path, LIBRARY_SCAN_DIRS=str(tmp_path))  # MODELS_DIR is tmp_path/models
    write_gguf(storage.models_dir / "ours-Q4_0.gguf", name="Ours")

    found = by_key(await Discovery(settings, storage).discover())

    assert ("folder", "models/ours-Q4_0.gguf") not in found
    assert ("folder", "my-models/mistral/mistral-IQ4_XS.gguf") in found
