"""The fit badges on the page: each variant's badge, the best fit marked, the context selector, the hardware."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from model_manager.core.config import Settings
from tests.conftest import LiveServer
from tests.fake_hub.server import FakeHub
from tests.fit.test_hub_fit import BASE, add_llama_providers
from tests.web.test_page import open_signed_in

BARTOWSKI = "bartowski/Llama-3.2-1B-Instruct-GGUF"


@pytest.fixture
def settings(settings: Settings, tiny_hub: FakeHub) -> Settings:
    """The service fits for a machine with 16 GiB of RAM and a 2 GiB GPU, whatever runs the test."""
    add_llama_providers(tiny_hub)
    return settings.model_copy(update={"fit_ram_gb": 16.0, "fit_vram_gb": 2.0})


def test_variants_show_where_they_run_and_the_best_fit(page: Page, live_server: LiveServer, screenshot) -> None:
    open_signed_in(page, live_server)
    expect(page.locator("#hw-summary")).to_have_text("16.00 GiB RAM · GPU 2.00 GiB free")

    page.fill("#search-query", "Llama-3.2-1B-Instruct")
    page.select_option("#search-form select[name=sort]", "downloads")
    page.click("#search-form button[type=submit]")
    page.locator(f'#results tr[data-repo="{BASE}"]').get_by_role("button", name="Providers").click()

    provider = page.locator(f'.provider[data-repo="{BARTOWSKI}"]')
    expect(provider.locator(".pill.fit")).to_have_count(6, timeout=30_000)  # 12 headers read cold
    q6 = provider.locator("tr", has_text="Q6_K")
    expect(q6.locator(".pill.fit")).to_have_text("Full GPU")
    expect(q6).to_contain_text("◆ best fit")
    expect(provider.locator("tr", has_text="F16").locator(".pill.fit")).to_have_text("Partial 10/16")
    title = q6.locator(".pill.fit").get_attribute("data-tip")
    assert "KV cache 0.25 GiB (8192 tokens)" in title and "Total" in title
    q6.evaluate("row => row.scrollIntoView({block: 'center'})")
    q6.locator(".pill.fit").hover()  # the memory breakdown shows
    expect(q6.locator(".pill.fit")).to_have_css("cursor", "help")
    page.wait_for_timeout(200)
    screenshot("fit")

    page.select_option("#fit-context", "16384")  # a longer context: the KV cache grows, Q6_K no longer fits
    expect(q6.locator(".pill.fit")).not_to_have_text("Full GPU")
    q5 = provider.locator("tr", has_text="Q5_K_M")
    expect(q5.locator(".pill.fit")).to_have_text("Full GPU")
    expect(q5).to_contain_text("◆ best fit")
    expect(provider.locator(".best-fit")).to_have_count(1)
    assert "(16384 tokens)" in q5.locator(".pill.fit").get_attribute("data-tip")
