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
from gwtest import seed
from signuphelpers import (
    ADDRESS,
    CATEGORY_NAMES,
    confirmation_link,
    signup_gateway,
    subscribe,
)
from test_browser import ARTIFACTS, browser  # noqa: F401 - the Chromium fixture

from gateway.consent import Classification

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True,
         "java_script_enabled": False}
LAWNMOWERS = Classification("acme", "acme-news", "marketing", "commercial", "lawnmowers")
DECKING = Classification("acme", "acme-news", "marketing", "commercial", "decking")


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


async def test_a_person_leaves_one_topic_in_the_preference_centre_on_a_phone(
        tmp_path, browser):  # noqa: F811
    async with signup_gateway(tmp_path, category_names=CATEGORY_NAMES) as gw:
        seed(gw.rt, address=ADDRESS, basis="consent")
        context = await browser.new_context(**PHONE)
        page = await context.new_page()
        link = gw.link(gw.issue(address=ADDRESS))
        await page.goto(link)
        assert await page.title() == "Unsubscribe from Acme Garden Ltd"
        await page.screenshot(path=str(ARTIFACTS / "preference-centre.png"), full_page=True)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing wider than the phone: no sideways scrolling
        assert gw.opt_outs() == []

        await page.get_by_role("button", name="Stop emails about Garden machinery").click()
        await page.wait_for_load_state()
        assert await page.locator("h1").inner_text() == "Your choice is saved"
        await page.screenshot(path=str(ARTIFACTS / "preference-saved.png"), full_page=True)
        [row] = gw.opt_outs()
        assert (row["method"], row["channel"]) == ("preference", "email")
        assert gw.rt.consent.evaluate(LAWNMOWERS, "email", ADDRESS).reason == "opted_out"
        assert gw.rt.consent.evaluate(DECKING, "email", ADDRESS).reason == "consent"

        await page.get_by_role("link", name="Back to your choices").click()
        await page.wait_for_load_state()
        assert await page.get_by_role("button", name="Stop emails about Garden machinery"
                                      ).count() == 0
        await page.get_by_role("button", name="Unsubscribe from emails").click()
        await page.wait_for_load_state()
        assert await page.locator("h1").inner_text() == "You are unsubscribed"
        assert gw.rt.consent.evaluate(DECKING, "email", ADDRESS).reason == "opted_out"
        await context.close()
