"""The pages in a real browser (headless Chromium via Playwright): what a person sees and
clicks, and what an operator sees. Screenshots go to test-artifacts/ for a human look."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import pagehelpers
from pagehelpers import ADDRESS, ADMIN_TOKEN

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
async def browser():
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install playwright)")
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def gw(tmp_path):
    async with pagehelpers.running_gateway(tmp_path) as gateway:
        yield gateway


async def test_a_person_unsubscribes_with_one_click_on_a_phone(gw, browser):
    context = await browser.new_context(viewport={"width": 390, "height": 844},
                                        is_mobile=True, java_script_enabled=False)
    page = await context.new_page()
    await page.goto(gw.link(gw.issue()))
    assert await page.title() == "Unsubscribe from Acme Garden Ltd"
    await page.screenshot(path=str(ARTIFACTS / "unsubscribe-page.png"), full_page=True)
    assert gw.opt_outs() == []

    await page.get_by_role("button", name="Unsubscribe from emails").click()
    await page.wait_for_load_state()
    assert await page.locator("h1").inner_text() == "You are unsubscribed"
    await page.screenshot(path=str(ARTIFACTS / "unsubscribed-page.png"), full_page=True)
    [row] = gw.opt_outs()
    assert (row["address"], row["channel"], row["method"]) == (ADDRESS, "email", "link")
    await context.close()


async def test_an_operator_reads_counts_and_filters_by_reason(gw, browser):
    for n in range(3):
        gw.decide(f"nobody{n}@example.com")
    gw.decide("customer@example.com", stream="acme-service")
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900},
        http_credentials={"username": "operator", "password": ADMIN_TOKEN})
    page = await context.new_page()
    await page.goto(f"{gw.base_url}/status")
    blocked = page.locator("#outcome-blocked td")
    assert await blocked.all_inner_texts() == ["3", "3"]
    await page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)

    await page.select_option("select[name=reason]", "service_message")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_load_state()
    assert "reason=service_message" in page.url
    reasons = await page.locator("#recent-decisions tbody td code").all_inner_texts()
    assert reasons == ["service_message"]
    await page.screenshot(path=str(ARTIFACTS / "status-filtered.png"), full_page=True)
    await context.close()
