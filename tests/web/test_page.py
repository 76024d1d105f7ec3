"""The web page in Chromium: asking for the token, showing refusals, and search → providers → download → library."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.cli.fixtures import BASE_REPO, GGUF_REPO, Q4_FILE, Q8_FILE, gguf_bytes
from tests.conftest import TEST_TOKEN, LiveServer
from tests.fake_hub.server import FakeHub, FakeRepo
from tests.gguf_factory import write_gguf
from tests.web.conftest import ARTIFACTS

TOKEN_KEY = "model-manager.token"


def open_signed_in(page: Page, server: LiveServer, tab: str = "discover") -> None:
    """Open the page as a browser that saved the token earlier."""
    page.add_init_script(f"localStorage.setItem({json.dumps(TOKEN_KEY)}, {json.dumps(TEST_TOKEN)})")
    page.goto(f"{server.url}/#{tab}")
    expect(page.locator("#token-dialog")).to_be_hidden()


def test_without_a_token_the_page_asks_for_it(page: Page, live_server: LiveServer, screenshot) -> None:
    page.goto(live_server.url + "/")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("model-manager token")
    expect(page.locator("#token-input")).to_be_focused()
    screenshot("token")


def test_screenshots_leave_the_committed_pictures_alone(
    page: Page, live_server: LiveServer, screenshot, monkeypatch
) -> None:
    # Issue 8, scenario 10: every run rewrote tests/artifacts/*.png, leaving `git status` dirty.
    monkeypatch.delenv("UPDATE_SCREENSHOTS", raising=False)
    committed = {path.name: path.read_bytes() for path in ARTIFACTS.glob("*.png")}
    page.goto(live_server.url + "/")
    saved = screenshot("token")
    assert saved.read_bytes().startswith(b"\x89PNG") and saved.parent != ARTIFACTS
    assert {path.name: path.read_bytes() for path in ARTIFACTS.glob("*.png")} == committed
    git = shutil.which("git")
    if git is None or not (ARTIFACTS.parent.parent / ".git").exists():
        pytest.skip("not a git checkout: cannot ask git whether the folder is ignored")
    ignored = subprocess.run([git, "check-ignore", "-q", str(saved)], cwd=ARTIFACTS.parent.parent, check=False)
    assert ignored.returncode == 0, f"{saved} is not ignored by git"


def test_a_refused_token_shows_the_services_message_and_an_accepted_one_is_kept(page: Page, live_server: LiveServer) -> None:
    with live_server.client() as client:
        refusal = client.get("/local/storage/stats", headers={"Authorization": "Bearer wrong"}).json()["message"]
    page.goto(live_server.url + "/")
    page.fill("#token-input", "wrong")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#token-error")).to_have_text(refusal)
    assert page.evaluate(f"localStorage.getItem({json.dumps(TOKEN_KEY)})") is None

    page.fill("#token-input", TEST_TOKEN)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#token-dialog")).to_be_hidden()
    assert page.evaluate(f"localStorage.getItem({json.dumps(TOKEN_KEY)})") == TEST_TOKEN
    page.reload()
    expect(page.locator("#token-dialog")).to_be_hidden()
    expect(page.locator("#mini-storage")).to_be_visible()


def test_a_refused_request_shows_the_error_envelopes_message(
    page: Page, live_server: LiveServer, tmp_path: Path, screenshot
) -> None:
    outside = write_gguf(tmp_path / "secret.gguf")  # not under the import folder
    with live_server.client() as client:
        envelope = client.post("/local/import", json={"file_path": str(outside)}).json()
    open_signed_in(page, live_server, "library")
    page.fill("#import-form input[name=file_path]", str(outside))
    page.click("#import-form button[type=submit]")
    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(envelope["message"])
    expect(banner).to_contain_text(envelope["error_code"])
    screenshot("error")


def test_search_providers_download_library_and_delete(
    page: Page, live_server: LiveServer, tiny_hub: FakeHub, screenshot
) -> None:
    tiny_hub.throttle_bytes_per_second = 6_000  # the 17 kB file takes about 3 s: long enough to watch it move
    open_signed_in(page, live_server)

    page.select_option("#search-form select[name=task]", "text-generation")
    page.select_option("#search-form select[name=sort]", "downloads")
    page.click("#search-form button[type=submit]")
    result = page.locator(f'#results tr[data-repo="{BASE_REPO}"]')
    expect(result).to_be_visible()
    expect(page.locator("#results tbody tr")).to_have_count(3)  # not the image classifier
    expect(page.locator("#results tbody tr").first).to_have_attribute("data-repo", BASE_REPO)  # most downloaded
    screenshot("search")

    result.get_by_role("button", name="Providers").click()
    provider = page.locator(f'.provider[data-repo="{GGUF_REPO}"]')
    expect(provider).to_contain_text("★ Recommended")
    expect(provider).to_contain_text("Q8_0")
    expect(provider.locator("tr", has_text="Q4_K_M")).to_contain_text("kB")
    expect(page.locator(".provider.recommended")).to_have_count(1)
    screenshot("providers")

    provider.locator('button[data-quant="Q4_K_M"]').click()
    expect(page.locator("#toast")).to_contain_text("Downloading")
    provider.locator('button[data-quant="Q8_0"]').click()
    expect(page.locator("#downloads-badge")).to_have_text("2")

    page.click('.tab[data-tab="downloads"]')
    q4 = page.locator(".download", has_text=Q4_FILE)
    q8 = page.locator(".download", has_text=Q8_FILE)
    expect(page.locator(".download")).to_have_count(2)
    expect(q4).to_contain_text(GGUF_REPO)
    page.wait_for_function(
        f"() => {{ const bar = [...document.querySelectorAll('.download')].find(d => d.textContent.includes({json.dumps(Q4_FILE)}))"
        ".querySelector('.progress'); const v = Number(bar.getAttribute('aria-valuenow')); return v >= 25 && v < 100; }"
    )
    page.wait_for_timeout(450)  # let the bars' width transition settle for the picture
    screenshot("downloads")

    q8.get_by_role("button", name="Cancel").click()
    expect(q8).to_have_attribute("data-status", "cancelled")
    expect(q4).to_have_attribute("data-status", "completed", timeout=20_000)
    expect(q4.locator(".progress")).to_have_attribute("aria-valuenow", "100")
    expect(q4).to_contain_text("100%")
    expect(page.locator("#downloads-badge")).to_be_hidden()

    page.click('.tab[data-tab="library"]')
    model = page.locator(f'#library-list tr[data-repo="{GGUF_REPO}"]')
    expect(model).to_be_visible()
    expect(model).to_contain_text("Q4_K_M")
    expect(page.locator("#storage .storage-facts")).to_contain_text("1 model")
    screenshot("library")

    page.once("dialog", lambda dialog: dialog.accept())
    model.get_by_role("button", name="Delete").click()
    expect(model).to_have_count(0)
    expect(page.locator("#library-list")).to_contain_text("No models yet")
    with live_server.client() as client:
        assert client.get("/local/models").json() == []


def test_providers_show_whether_they_can_be_downloaded_and_their_variant_labels(
    page: Page, live_server: LiveServer, tiny_hub: FakeHub, tmp_path: Path, screenshot
) -> None:
    # Issue 8, scenarios 7 and 8 on the page: a gated provider the service cannot download (no HF_TOKEN here),
    # and a repo whose Q4_K_M files are two different models with labels of their own.
    gated_repo, mixed_repo = "gatedlab/Tiny-Chat-1B-GGUF", "mixfolk/Tiny-Chat-1B-GGUF"
    related = {"tags": ["gguf", f"base_model:quantized:{BASE_REPO}"], "card_data": {"base_model": BASE_REPO}}
    tiny_hub.add_repo(FakeRepo(gated_repo, gated="manual", downloads=900_000, likes=4_000,
                               files={Q4_FILE: gguf_bytes(tmp_path, Q4_FILE)}, **related))
    names = ("tiny-1b.Q4_K_M.gguf", "tiny-1b-chat.Q4_K_M.gguf")
    files = {name: gguf_bytes(tmp_path, name, 1024 + len(name)) for name in names}
    tiny_hub.add_repo(FakeRepo(mixed_repo, downloads=400, likes=9, files=files, **related))
    open_signed_in(page, live_server)
    page.click("#search-form button[type=submit]")
    page.locator(f'#results tr[data-repo="{BASE_REPO}"]').get_by_role("button", name="Providers").click()

    gated = page.locator(f'.provider[data-repo="{gated_repo}"]')
    expect(gated).to_have_attribute("data-downloadable", "false")
    expect(gated.locator(".provider-head")).to_contain_text("Not downloadable")
    expect(gated.locator(".reasons")).to_contain_text("not downloadable: gated and no HF_TOKEN is configured")
    expect(gated.locator("button[data-quant]")).to_be_disabled()
    expect(page.locator(".provider").last).to_have_attribute("data-repo", gated_repo)  # lowest score: listed last
    expect(page.locator(f'.provider[data-repo="{GGUF_REPO}"]')).to_have_attribute("data-downloadable", "true")

    mixed = page.locator(f'.provider[data-repo="{mixed_repo}"]')
    expect(mixed.locator(".variant-qualifier")).to_have_text(["(tiny-1b)", "(tiny-1b-chat)"])
    gated.scroll_into_view_if_needed()  # the last provider: the mixed one shows above it
    screenshot("provider-states")
    button = mixed.locator('button[data-quant="Q4_K_M (tiny-1b-chat)"]')
    button.click()
    expect(button).to_have_text("Started ✓")  # the service took the label (202); the toast may already say done
    with live_server.client() as client:
        (download,) = client.get("/local/downloads").json()
    assert (download["repo_id"], download["files"]) == (mixed_repo, ["tiny-1b-chat.Q4_K_M.gguf"])


@pytest.mark.parametrize("name", ["app.js", "style.css"])
def test_the_pages_files_are_served_without_a_token(live_server: LiveServer, name: str) -> None:
    import httpx

    response = httpx.get(f"{live_server.url}/static/{name}")
    assert response.status_code == 200
    assert "Content-Security-Policy" in response.headers
