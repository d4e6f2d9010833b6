"""The unsubscribe pages behind every link, over a real socket (contract: "Unsubscribe over
HTTP"): a GET only shows, a POST records once, a bad token reveals nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import pagehelpers
from pagehelpers import ADDRESS, tamper

ONE_CLICK = "List-Unsubscribe=One-Click"


@pytest.fixture
async def gw(tmp_path):
    async with pagehelpers.running_gateway(tmp_path) as gateway:
        yield gateway


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http, url) -> tuple[int, str]:
    async with http.get(url, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def post(http, url, **kwargs) -> tuple[int, str]:
    async with http.post(url, allow_redirects=False, **kwargs) as resp:
        return resp.status, await resp.text()


async def test_opening_a_link_shows_the_org_and_a_masked_address(gw, http):
    status, body = await get(http, gw.link(gw.issue()))
    assert status == 200
    assert "Acme Garden Ltd" in body
    assert "j•••@example.com" in body
    assert ADDRESS not in body


async def test_the_page_offers_a_post_form_and_an_all_channels_button(gw, http):
    _, body = await get(http, gw.link(gw.issue()))
    assert '<form method="post">' in body
    assert 'name="scope" value="all"' in body
    assert "Unsubscribe from all channels" in body


async def test_opening_a_link_records_nothing(gw, http):
    await get(http, gw.link(gw.issue()))
    assert gw.opt_outs() == []


async def test_posting_records_one_opt_out_of_the_tokens_org_and_channel(gw, http):
    status, body = await post(http, gw.link(gw.issue()), data={"scope": "channel"})
    assert status == 200
    assert "You are unsubscribed" in body
    [row] = gw.opt_outs()
    assert (row["org"], row["channel"], row["address"]) == ("acme", "email", ADDRESS)
    assert (row["kind"], row["method"]) == ("optout", "link")


async def test_the_opt_out_keeps_message_id_client_and_token_id(gw, http):
    token = gw.issue(message_id="<m1@x>")
    await post(http, gw.link(token))
    [row] = gw.opt_outs()
    assert row["message_id"] == "<m1@x>"
    assert row["client"] == "127.0.0.1"
    assert row["token"] == gw.rt.tokens.resolve(token).id


async def test_a_second_post_says_already_and_records_nothing_new(gw, http):
    link = gw.link(gw.issue())
    await post(http, link)
    status, body = await post(http, link)
    assert status == 200
    assert "already unsubscribed" in body
    assert len(gw.opt_outs()) == 1


async def test_opening_the_link_after_unsubscribing_says_already(gw, http):
    link = gw.link(gw.issue())
    await post(http, link)
    status, body = await get(http, link)
    assert status == 200
    assert "already unsubscribed" in body


async def test_the_all_channels_button_records_an_opt_out_of_all_channels(gw, http):
    await post(http, gw.link(gw.issue()), data={"scope": "all"})
    [row] = gw.opt_outs()
    assert row["channel"] == "all"


async def test_one_click_urlencoded_answers_200_without_redirect(gw, http):
    status, body = await post(
        http, gw.link(gw.issue()), data=ONE_CLICK,
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    assert "You are unsubscribed" in body
    assert [r["method"] for r in gw.opt_outs()] == ["one-click"]


async def test_one_click_multipart_answers_200_without_redirect(gw, http):
    form = aiohttp.MultipartWriter("form-data")
    form.append("One-Click").set_content_disposition("form-data", name="List-Unsubscribe")
    status, _ = await post(http, gw.link(gw.issue()), data=form)
    assert status == 200
    assert [r["method"] for r in gw.opt_outs()] == ["one-click"]


async def test_one_click_without_a_content_type_still_counts_as_one_click(gw, http):
    status, _ = await post(http, gw.link(gw.issue()), data=ONE_CLICK.encode(),
                           skip_auto_headers=["Content-Type"])
    assert status == 200
    assert [r["method"] for r in gw.opt_outs()] == ["one-click"]


async def test_a_post_with_a_broken_multipart_body_still_records_the_opt_out(gw, http):
    status, _ = await post(http, gw.link(gw.issue()), data=b"--xx\r\nnonsense",
                           headers={"Content-Type": "multipart/form-data; boundary=xx"})
    assert status == 200
    assert [r["method"] for r in gw.opt_outs()] == ["link"]


async def test_the_opt_out_is_counted_in_metrics_by_channel_and_method(gw, http):
    await post(http, gw.link(gw.issue()), data=ONE_CLICK,
               headers={"Content-Type": "application/x-www-form-urlencoded"})
    value = gw.rt.metrics.registry.get_sample_value(
        "gateway_opt_outs_total", {"channel": "email", "source": "one-click"})
    assert value == 1


async def test_a_tampered_token_gets_404_and_records_nothing(gw, http):
    link = gw.link(tamper(gw.issue()))
    assert (await get(http, link))[0] == 404
    status, body = await post(http, link, data=ONE_CLICK,
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 404
    assert "This link is not valid" in body
    assert gw.opt_outs() == []


async def test_a_token_signed_by_another_deployment_gets_404(gw, http):
    token = gw.issue_signed_with("another-deployments-secret")
    assert (await post(http, gw.link(token)))[0] == 404
    assert gw.opt_outs() == []


async def test_a_well_signed_but_unknown_token_gets_404(gw, http):
    token, _ = pagehelpers.make_token(gw.rt.settings.unsubscribe.secrets[0])
    assert (await get(http, gw.link(token)))[0] == 404


async def test_every_kind_of_bad_link_gets_the_same_page(gw, http):
    good = gw.issue()
    unknown, _ = pagehelpers.make_token(gw.rt.settings.unsubscribe.secrets[0])
    bodies = {(await get(http, gw.link(token)))[1] for token in
              (tamper(good), unknown, gw.issue_signed_with("other"), "not-a-token",
               "x" * 200, good + "a")}
    assert len(bodies) == 1
    [body] = bodies
    assert "This link is not valid" in body
    assert "Acme" not in body


async def test_a_token_signed_with_a_retired_secret_still_listed_is_valid(tmp_path, http):
    async with pagehelpers.running_gateway(tmp_path, secrets=("new", "old")) as gw:
        status, _ = await post(http, gw.link(gw.issue_signed_with("old")))
        assert status == 200
        assert len(gw.opt_outs()) == 1


async def test_a_token_signed_with_a_secret_no_longer_listed_is_refused(tmp_path, http):
    async with pagehelpers.running_gateway(tmp_path, secrets=("new", "old")) as gw:
        status, _ = await post(http, gw.link(gw.issue_signed_with("older")))
        assert status == 404
        assert gw.opt_outs() == []


async def test_after_unsubscribing_marketing_to_the_person_is_opted_out(gw, http):
    assert gw.evaluate().reason != "opted_out"
    await post(http, gw.link(gw.issue()))
    assert gw.evaluate().reason == "opted_out"


async def test_a_text_link_records_an_sms_opt_out_and_speaks_of_texts(gw, http):
    token = gw.issue(channel="sms", address="+447700900123")
    _, page = await get(http, gw.link(token, "sms"))
    assert "texts" in page
    await post(http, gw.link(token, "sms"))
    [row] = gw.opt_outs()
    assert (row["channel"], row["address"]) == ("sms", "+447700900123")


async def test_an_old_link_works_again_after_the_person_opted_back_in(gw, http):
    link = gw.link(gw.issue())
    await post(http, link)
    gw.rt.ledger.record_opt_out("acme", "email", ADDRESS, kind="optin", method="api")
    _, body = await post(http, link)
    assert "You are unsubscribed" in body
    assert [r["kind"] for r in gw.opt_outs()] == ["optout", "optin", "optout"]


async def test_an_org_name_with_markup_is_shown_escaped(tmp_path, http):
    async with pagehelpers.running_gateway(
            tmp_path, org_name="<script>alert(1)</script> Ltd") as gw:
        _, body = await get(http, gw.link(gw.issue()))
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Ltd" in body


async def test_pages_work_on_phones_without_javascript(gw, http):
    _, body = await get(http, gw.link(gw.issue()))
    assert 'name="viewport"' in body
    assert "<script" not in body


async def test_pages_are_not_cached_and_set_no_cookies(gw, http):
    async with http.post(gw.link(gw.issue()), allow_redirects=False) as resp:
        assert resp.headers["Cache-Control"] == "no-store"
        assert "Set-Cookie" not in resp.headers
