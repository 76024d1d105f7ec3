"""Fixtures for the page tests: Debian's Chromium driven by Playwright, and the live service on the fake Hub."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.fixtures import settings, tiny_hub  # noqa: F401 - fixtures
from tests.fake_hub.fixtures import fake_hub, hub_env  # noqa: F401 - fixtures

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"  # the pictures README.md and docs/ show
LATEST = ARTIFACTS / "latest"  # every run's pictures; ignored by git (.gitignore)
_CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(autouse=True)
def tool_homes_of_the_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Library tab looks for other tools' models: in a home of the test's, never the machine's own."""
    home = tmp_path / "tools-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    for name in ("OLLAMA_MODELS", "HF_HUB_CACHE", "HF_HOME", "LLAMA_CACHE", "LIBRARY_SCAN_DIRS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (./test.sh does) to run the page tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=_CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server) -> Iterator:
    """A fresh browser profile (empty local storage) with a desktop-sized window.

    Closed before the live server stops, so that no open event stream holds up the server's shutdown.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
    context.set_default_timeout(10_000)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    yield page
    context.close()
    assert script_errors == [], f"the page's script failed: {script_errors}"


@pytest.fixture
def screenshot(page) -> Iterator:
    """`screenshot("search")` saves the page as tests/artifacts/latest/search.png, which git ignores.

    With UPDATE_SCREENSHOTS=1 it also replaces tests/artifacts/search.png, the picture the README shows:
    the committed pictures change only when someone asks for it.
    """
    LATEST.mkdir(parents=True, exist_ok=True)

    def save(name: str) -> Path:
        path = LATEST / f"{name}.png"
        page.screenshot(path=str(path))
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(path, ARTIFACTS / f"{name}.png")
        return path

    yield save
