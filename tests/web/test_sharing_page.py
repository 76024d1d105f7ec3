"""The page's side of issue 11 in Chromium: "Found on this machine" (discover, link or register with one click)
and a library model's exports to Ollama, LM Studio and the HF cache, with their run commands.

The live service runs in this process, so the fake tools' homes are seen through HOME (the service reads the
tools' places from its environment at each call). Every outcome is checked on disk as well as on the page.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from model_manager.core.config import Settings
from tests.app.test_discover_routes import homes  # noqa: F401 - fixture: every tool's folder under a fake HOME
from tests.conftest import LiveServer, make_settings
from tests.fake_tool_homes import Homes
from tests.gguf_factory import write_gguf
from tests.web.test_page import open_signed_in

OLLAMA_NAME = "llama3.2:latest"
QWEN_NAME = "lmstudio-community/Qwen-GGUF/qwen-Q8_0.gguf"
BIG_NAME = "someone/Big-GGUF/big-Q4_K_M-00001-of-00002.gguf"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[Path | None]:
    """A scanned folder on another filesystem than the library (tmpfs), or None where there is none."""
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        yield None
        return
    folder = Path(tempfile.mkdtemp(dir="/dev/shm"))
    write_gguf(folder / "far-Q4_0.gguf", name="Far", file_type=2)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A scanned folder that imports may not read (not in IMPORT_ALLOWED_DIRS), with one model."""
    folder = tmp_path / "outside"
    folder.mkdir()
    write_gguf(folder / "kept-Q4_0.gguf", name="Kept", file_type=2)
    return folder


@pytest.fixture
def settings(tmp_path: Path, homes: Homes, elsewhere: Path | None, outside: Path) -> Settings:
    other_filesystem = [str(elsewhere)] if elsewhere else []
    return make_settings(
        tmp_path,
        homes.home,
        IMPORT_ALLOWED_DIRS=",".join([str(homes.home), str(homes.scan_dir), *other_filesystem]),
        LIBRARY_SCAN_DIRS=",".join([str(homes.scan_dir), str(outside), *other_filesystem]),
        HF_ENDPOINT="http://127.0.0.1:9",  # nothing here asks the Hub; if something did, it fails at once
    )


def found_row(page: Page, tool: str, name: str):
    return page.locator(f'#found-list tr.found[data-tool="{tool}"][data-name="{name}"]')


def same_file(a: str | Path, b: str | Path) -> bool:
    first, second = os.stat(a), os.stat(b)
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def test_found_models_are_listed_and_join_the_library_by_link_or_register(
    page: Page, live_server: LiveServer, homes: Homes, elsewhere: Path | None, screenshot
) -> None:
    open_signed_in(page, live_server, "library")
    rows = page.locator("#found-list tr.found")
    expect(rows).to_have_count(len(homes.expected) + 1 + (1 if elsewhere else 0))  # + outside (+ elsewhere)
    for (tool, name), facts in homes.expected.items():
        row = found_row(page, tool, name)
        expect(row).to_contain_text(facts["quantization"])
        expect(row).to_have_attribute("data-path", facts["path"])
        expect(row.get_by_role("button", name="Link into library")).to_be_enabled()
    expect(found_row(page, "ollama", OLLAMA_NAME)).to_contain_text("also ollama llama3.2:3b")

    skipped = page.locator("#found-list details.skipped")
    expect(skipped.locator("summary")).to_have_text(f"{len(homes.expected_skips)} skipped: could not be used")
    expect(skipped.locator("li").first).to_be_hidden()  # collapsed until asked
    skipped.locator("summary").click()
    for path, reason in homes.expected_skips.items():
        expect(skipped.locator(f'li[data-path="{path}"]')).to_contain_text(reason)

    if elsewhere is not None:  # zero-copy impossible: Register instead, and why
        far = found_row(page, "folder", "far-Q4_0.gguf")
        expect(far.get_by_role("button", name="Link into library")).to_have_count(0)
        expect(far).to_contain_text("another filesystem")
        expect(far.get_by_role("button", name="Register")).to_be_visible()

    page.set_viewport_size({"width": 1280, "height": 1500})  # the whole list and its skipped entries in one picture
    page.locator("#found").evaluate("card => window.scrollTo(0, card.offsetTop - 70)")
    screenshot("found-on-this-machine")
    page.set_viewport_size({"width": 1280, "height": 800})

    ollama = found_row(page, "ollama", OLLAMA_NAME)
    ollama.get_by_role("button", name="Link into library").click()
    expect(ollama.locator(".in-library")).to_have_text("In library")
    expect(ollama).to_have_attribute("data-in-library", "true")
    library_row = page.locator("#library-list tbody tr", has_text=OLLAMA_NAME)
    expect(library_row).to_have_count(1)
    with live_server.client() as client:
        (model,) = client.get("/local/models").json()
    assert model["display_name"] == OLLAMA_NAME
    assert same_file(model["file_path"], homes.expected[("ollama", OLLAMA_NAME)]["path"])  # one file, two names
    assert Path(model["file_path"]).parent == Path(live_server.settings.models_dir)
    expect(page.locator("#found-list tr.found .in-library")).to_have_count(1)  # only the one clicked

    if elsewhere is not None:
        far = found_row(page, "folder", "far-Q4_0.gguf")
        far.get_by_role("button", name="Register").click()
        expect(far.locator(".in-library")).to_have_text("In library")
        with live_server.client() as client:
            registered = [m for m in client.get("/local/models").json() if m["file_path"] == str(elsewhere / "far-Q4_0.gguf")]
        assert len(registered) == 1 and registered[0]["external"] is True
        expect(page.locator("#library-list tbody tr", has_text="registered in place")).to_have_count(1)


def test_a_model_is_exported_to_other_tools_by_links_and_an_export_removed(
    page: Page, live_server: LiveServer, homes: Homes, screenshot
) -> None:
    qwen_path = homes.expected[("lmstudio", QWEN_NAME)]["path"]
    big_path = homes.expected[("lmstudio", BIG_NAME)]["path"]
    with live_server.client() as client:
        imported = client.post("/local/discover/import", json={"paths": [qwen_path, big_path], "action": "link"}).json()
        assert imported["imported"] == 2, imported
        qwen, big = (item["model"] for item in imported["results"])
        # What the service answers for a split model sent to Ollama (nothing is made: a 400).
        refusal = client.post(f"/local/models/{big['model_id']}/exports", json={"target": "ollama"})
        assert refusal.status_code == 400, refusal.text
        refusal = refusal.json()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    open_signed_in(page, live_server, "library")

    row = page.locator(f'#library-list tr[data-model-id="{qwen["model_id"]}"]')
    row.get_by_role("button", name="Other tools").click()
    share = page.locator(f'#library-list tr.share-row[data-model-id="{qwen["model_id"]}"]')
    expect(share).to_contain_text("Not exported yet.")
    share.get_by_role("button", name="LM Studio", exact=True).click()
    expect(share.locator('tr.export[data-target="lmstudio"]')).to_be_visible()
    share.get_by_role("button", name="HF cache", exact=True).click()
    hf_row = share.locator('tr.export[data-target="hf-cache"]')
    expect(hf_row).to_be_visible()
    expect(row.locator(".share-toggle .badge")).to_have_text("2")

    with live_server.client() as client:
        model = client.get(f"/local/models/{qwen['model_id']}").json()
    exports = {item["target"]: item for item in model["exports"]}
    assert sorted(exports) == ["hf-cache", "lmstudio"]
    # The model came from LM Studio's folder for its repo: LM Studio already sees this very file there.
    assert model["original_repo_id"] and exports["lmstudio"]["name"] == model["original_repo_id"]
    assert exports["lmstudio"]["method"] == "existing" and exports["lmstudio"]["created_paths"] == []
    expect(share.locator('tr.export[data-target="lmstudio"] .pill.method')).to_have_text("tool's own copy")
    expect(hf_row).to_contain_text(exports["hf-cache"]["name"])
    expect(hf_row.locator(".pill.method")).to_have_text("hard link")
    hf_paths = [Path(p) for p in exports["hf-cache"]["created_paths"]]
    blob = next(p for p in hf_paths if p.parent.name == "blobs")
    snapshot = next(p for p in hf_paths if "snapshots" in p.parts)
    assert blob.is_relative_to(homes.home / ".cache" / "huggingface" / "hub")
    assert same_file(blob, model["file_path"]) and blob.name == model["file_hash"]
    assert snapshot.is_symlink() and same_file(snapshot, model["file_path"])

    for tool in ("llama.cpp", "lmstudio", "hf-cache"):
        expect(share.locator(f'.run-command[data-tool="{tool}"] .command')).to_have_text(model["run"][tool])
    llama = share.locator('.run-command[data-tool="llama.cpp"]')
    llama.get_by_role("button", name="Copy the llama.cpp command").click()
    expect(llama.locator("button.copy")).to_have_text("Copied ✓")
    assert page.evaluate("navigator.clipboard.readText()") == model["run"]["llama.cpp"]
    share.evaluate("el => el.scrollIntoView({block: 'center'})")
    page.evaluate("document.getElementById('toast').hidden = true")  # the last toast would cover the row
    screenshot("model-exports")

    hf_row.get_by_role("button", name="Remove").click()
    expect(share.locator('tr.export[data-target="hf-cache"]')).to_have_count(0)
    expect(share.get_by_role("button", name="HF cache", exact=True)).to_be_visible()  # can be exported again
    assert not os.path.lexists(blob) and not os.path.lexists(snapshot)
    assert same_file(qwen_path, model["file_path"])  # LM Studio's own file stays
    with live_server.client() as client:
        assert [item["target"] for item in client.get(f"/local/models/{qwen['model_id']}").json()["exports"]] == ["lmstudio"]

    # A refusal shows the envelope's message and code beside the buttons; nothing is made.
    big_row = page.locator(f'#library-list tr[data-model-id="{big["model_id"]}"]')
    big_row.get_by_role("button", name="Other tools").click()
    big_share = page.locator(f'#library-list tr.share-row[data-model-id="{big["model_id"]}"]')
    error = big_share.locator(".share-error")
    # The HF cache already keeps other bytes under the name of the model's first part: 409, that file untouched.
    first_part = big["metadata"]["parts"][0]["sha256"]
    theirs = homes.home / ".cache" / "huggingface" / "hub" / f"models--{big['original_repo_id'].replace('/', '--')}" / "blobs" / first_part
    theirs.parent.mkdir(parents=True, exist_ok=True)
    theirs.write_bytes(b"the cache's own file")
    with live_server.client() as client:
        in_use = client.post(f"/local/models/{big['model_id']}/exports", json={"target": "hf-cache"})
        assert in_use.status_code == 409, in_use.text
        in_use = in_use.json()
    big_share.get_by_role("button", name="HF cache", exact=True).click()
    expect(error).to_contain_text(in_use["message"])
    expect(error).to_contain_text("FILE_IN_USE")
    assert theirs.read_bytes() == b"the cache's own file"

    ollama_before = sorted(homes.ollama.rglob("*"))
    big_share.get_by_role("button", name="Ollama", exact=True).click()
    expect(error).to_contain_text(refusal["message"])
    expect(error).to_contain_text(refusal["error_code"])
    expect(big_share.get_by_role("button", name="Ollama", exact=True)).to_be_enabled()
    assert sorted(homes.ollama.rglob("*")) == ollama_before


def test_what_cannot_be_imported_says_why_on_its_row(page: Page, live_server: LiveServer, homes: Homes) -> None:
    open_signed_in(page, live_server, "library")
    kept = found_row(page, "folder", "kept-Q4_0.gguf")  # outside IMPORT_ALLOWED_DIRS
    with live_server.client() as client:
        listed = {model["name"]: model for model in client.get("/local/discover").json()["models"]}
    expect(kept.locator(".pill")).to_contain_text(["Folder", "Cannot import"])
    expect(kept.locator(".why")).to_have_text(listed["kept-Q4_0.gguf"]["import_blocked"])
    expect(kept.get_by_role("button")).to_have_count(0)

    # A model that went away after the list was shown: the import fails, and its row says so.
    mistral = found_row(page, "folder", "mistral/mistral-IQ4_XS.gguf")
    expect(mistral.get_by_role("button", name="Link into library")).to_be_enabled()
    gone = Path(homes.expected[("folder", "mistral/mistral-IQ4_XS.gguf")]["path"])
    gone.unlink()
    with live_server.client() as client:
        (failure,) = client.post("/local/discover/import", json={"paths": [str(gone)]}).json()["results"]
    assert failure["status"] == "failed"
    mistral.get_by_role("button", name="Link into library").click()
    expect(mistral.locator(".form-error")).to_contain_text(failure["message"])
    expect(mistral.locator(".form-error")).to_contain_text(failure["error_code"])
    expect(mistral.get_by_role("button", name="Link into library")).to_be_enabled()
    with live_server.client() as client:
        assert client.get("/local/models").json() == []
    page.click("#found-rescan")  # Look again: the model that went away is no longer listed
    expect(mistral).to_have_count(0)
    expect(kept).to_be_visible()
