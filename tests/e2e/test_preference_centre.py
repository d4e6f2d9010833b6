"""The preference centre on the unsubscribe page (`/u/TOKEN`): one choice per category
group of the org, each one POST; what leaving one records, and what the decisions then
say. One-click and "everything" work as before."""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gwtest import SOFT_OPT_IN, seed
from pagehelpers import ADDRESS, ADMIN_TOKEN, basic_auth
from signuphelpers import CATEGORY_NAMES, signup_gateway

from gateway.consent import Classification

GARDEN = ["lawnmowers", "hedge-trimmers", "garden-tools"]


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def gw(tmp_path, ledger_url):
    async with signup_gateway(tmp_path, ledger_url=ledger_url,
                              category_names=CATEGORY_NAMES) as gateway:
        yield gateway


@pytest.fixture
async def sqlite_gw(tmp_path):
    async with signup_gateway(tmp_path, category_names=CATEGORY_NAMES) as gateway:
        yield gateway


def reason(gw, category: str, channel: str = "email") -> str:
    what = Classification("acme", "acme-news", "marketing", "commercial", category)
    return gw.rt.consent.evaluate(what, channel, ADDRESS).reason


async def post(http, url: str, **data) -> tuple[int, str]:
    async with http.post(url, data=data, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def test_the_page_offers_one_choice_per_category_group_named_by_the_org(sqlite_gw,
                                                                               http):
    gw = sqlite_gw
    async with http.get(gw.link(gw.issue())) as resp:
        page = await resp.text()
    assert 'value="category:lawnmowers">Stop emails about Garden machinery</button>' in page
    assert 'value="category:decking">Stop emails about decking, fencing</button>' in page
    assert 'value="channel">Unsubscribe from emails' in page
    assert 'value="all">Unsubscribe from all channels' in page
    assert "<script" not in page


async def test_leaving_a_category_blocks_it_and_still_allows_the_others(gw, http):
    seed(gw.rt, address=ADDRESS, basis="consent")
    status, page = await post(http, gw.link(gw.issue()), scope="category:lawnmowers")
    assert status == 200 and "Your choice is saved" in page and "Garden machinery" in page
    [row] = gw.opt_outs()
    assert (row["channel"], row["method"], row["kind"]) == ("email", "preference", "optout")
    assert row["categories"] == '["lawnmowers", "hedge-trimmers", "garden-tools"]'
    assert [reason(gw, c) for c in GARDEN] == ["opted_out"] * 3
    assert reason(gw, "decking") == "consent"
    assert reason(gw, "decking", "sms") == "no_consent"


async def test_a_header_naming_a_left_category_in_other_case_is_still_blocked(sqlite_gw,
                                                                              http):
    gw = sqlite_gw
    seed(gw.rt, address=ADDRESS, basis="consent")
    await post(http, gw.link(gw.issue()), scope="category:decking")
    port = gw.rt.settings.smtp.listen.port
    for category in ("Decking", " FENCING "):
        message = (f"From: news@acme.test\r\nTo: {ADDRESS}\r\nSubject: Deck oil\r\n"
                   f"X-Gateway-Category: {category}\r\n\r\nHalf price.\r\n").encode()
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            await client.login("acme-news", "news-pass")
            with pytest.raises(aiosmtplib.SMTPDataError, match="opted_out"):
                await client.sendmail("news@acme.test", [ADDRESS], message)
    assert reason(gw, "Lawnmowers") == "consent"  # the other groups still go


async def test_a_soft_opt_in_for_another_category_still_allows(sqlite_gw, http):
    gw = sqlite_gw
    seed(gw.rt, address=ADDRESS, **{**SOFT_OPT_IN, "categories": ["lawnmowers", "decking"]})
    await post(http, gw.link(gw.issue()), scope="category:decking")
    assert reason(gw, "fencing") == "opted_out"
    assert reason(gw, "hedge-trimmers") == "soft_opt_in"


async def test_leaving_the_same_category_again_records_nothing_more(sqlite_gw, http):
    gw = sqlite_gw
    link = gw.link(gw.issue())
    await post(http, link, scope="category:decking")
    status, page = await post(http, link, scope="category:fencing")  # the same group
    assert status == 200 and "already stopped" in page
    assert len(gw.opt_outs()) == 1


async def test_the_page_shows_a_left_category_as_stopped(sqlite_gw, http):
    gw = sqlite_gw
    link = gw.link(gw.issue())
    await post(http, link, scope="category:decking")
    async with http.get(link) as resp:
        page = await resp.text()
    assert 'value="category:decking"' not in page and "stopped" in page
    assert 'value="category:lawnmowers"' in page


async def test_a_choice_the_org_does_not_offer_records_nothing(sqlite_gw, http):
    gw = sqlite_gw
    status, page = await post(http, gw.link(gw.issue()), scope="category:car-insurance")
    assert status == 422 and "That choice is not offered." in page
    assert gw.opt_outs() == []


async def test_one_click_still_opts_out_of_the_whole_channel(gw, http):
    seed(gw.rt, address=ADDRESS, basis="consent")
    link = gw.link(gw.issue())
    await post(http, link, scope="category:lawnmowers")
    status, _ = await post(http, link, **{"List-Unsubscribe": "One-Click"})
    assert status == 200
    scoped, whole = gw.opt_outs()
    assert (whole["method"], whole["channel"], whole["categories"]) == ("one-click", "email",
                                                                        "[]")
    assert reason(gw, "decking") == "opted_out"


async def test_everything_still_opts_out_of_all_channels(sqlite_gw, http):
    gw = sqlite_gw
    seed(gw.rt, address=ADDRESS, basis="consent")
    link = gw.link(gw.issue())
    status, page = await post(http, link, scope="all")
    assert status == 200 and "You are unsubscribed" in page
    [row] = gw.opt_outs()
    assert (row["channel"], row["categories"]) == ("all", "[]")
    assert reason(gw, "decking") == "opted_out"


async def test_a_category_opt_out_does_not_make_the_link_say_already_unsubscribed(sqlite_gw,
                                                                                   http):
    gw = sqlite_gw
    link = gw.link(gw.issue())
    await post(http, link, scope="category:lawnmowers")
    status, page = await post(http, link, scope="channel")
    assert status == 200 and "You are unsubscribed" in page
    assert [r["categories"] for r in gw.opt_outs()] == [
        '["lawnmowers", "hedge-trimmers", "garden-tools"]', "[]"]


async def test_the_audit_trail_and_status_page_show_the_scope(sqlite_gw, http):
    gw = sqlite_gw
    await post(http, gw.link(gw.issue()), scope="category:decking")
    async with http.get(f"{gw.base_url}/api/v1/contacts/email/{ADDRESS}?org=acme",
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        trail = await resp.json()
    assert trail["opt_outs"][0]["categories"] == ["decking", "fencing"]
    async with http.get(f"{gw.base_url}/status?address={ADDRESS}",
                        headers=basic_auth()) as resp:
        page = await resp.text()
    assert "<td>decking, fencing</td>" in page
    assert "preference centre (some categories)" in page
