"""The double opt-in and the preference centre in a real browser (headless Chromium via
Playwright, as test_browser.py): the link from the email the upstream sink received, the
button, and what the ledger then holds. Screenshots go to test-artifacts/ (the README's
copies in docs/ were taken from there)."""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from signuphelpers import ADDRESS, confirmation_link, signup_gateway, subscribe
from test_browser import ARTIFACTS, browser  # noqa: F401 - the Chromium fixture

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True,
         "java_script_enabled": False}


@pytest.fixture
async def gw(tmp_path, sink):
    async with signup_gateway(tmp_path, sink) as gateway:
        yield gateway


async def test_a_person_confirms_from_the_emailed_link_on_a_phone(gw, sink, browser):  # noqa: F811
    async with aiohttp.ClientSession() as http:
        status, _ = await subscribe(http, gw)
    assert status == 202
    [(_, _, raw)] = await sink.wait_for(1)
    context = await browser.new_context(**PHONE)
    page = await context.new_page()
    await page.goto(confirmation_link(raw))
    assert await page.title() == "Confirm your subscription to Acme Garden Ltd"
    await page.screenshot(path=str(ARTIFACTS / "confirm-page.png"), full_page=True)
    assert gw.evaluate(ADDRESS).reason == "no_consent"  # opening it confirmed nothing

    await page.get_by_role("button", name="Yes, subscribe me").click()
    await page.wait_for_load_state()
    assert await page.locator("h1").inner_text() == "You are subscribed"
    [consent] = list(gw.rt.ledger.iter_all("evidence"))
    assert consent["confirmed_at"] and consent["basis"] == "consent"
    [row] = gw.rt.ledger.subscriptions_for(ADDRESS)
    assert "Mobile" in row["confirmed_user_agent"] or "Chrome" in row["confirmed_user_agent"]
    decision = gw.evaluate(ADDRESS)
    assert decision.allowed and decision.reason == "consent"
    await context.close()
