"""The double opt-in end to end: a sign-up through the admin API, the confirmation email
at a real upstream sink, its link opened (GET shows, POST confirms), and what the ledger
and the decisions then say. The clock of expiry and throttling is the service's."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gwtest import wait_until_spool_is_empty
from pagehelpers import ADMIN_TOKEN, tamper
from signuphelpers import (
    ADDRESS,
    SIGNUP,
    confirmation_link,
    parsed,
    signup_gateway,
    subscribe,
)


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def gw(tmp_path, sink, ledger_url):
    async with signup_gateway(tmp_path, sink, ledger_url) as gateway:
        yield gateway


@pytest.fixture
async def sqlite_gw(tmp_path, sink):
    async with signup_gateway(tmp_path, sink) as gateway:
        yield gateway


def consents(gw) -> list[dict]:
    return [e for e in gw.rt.ledger.iter_all("evidence") if e["address"] == ADDRESS]


async def signed_up(http, gw, sink, **fields) -> str:
    """Sign up and wait for the confirmation email; its link."""
    status, body = await subscribe(http, gw, **fields)
    assert status == 202 and body["confirmation_sent"] is True
    messages = await sink.wait_for(1)
    return confirmation_link(messages[-1][2])


async def test_a_sign_up_whose_region_is_no_country_code_is_refused_naming_region(
        sqlite_gw, http, sink):
    status, body = await subscribe(http, sqlite_gw, region="UK")
    assert (status, body["error"]) == (422, "invalid")
    assert "the United Kingdom is GB" in body["fields"]["region"]
    assert sqlite_gw.rt.ledger.subscriptions_for(ADDRESS) == []


async def test_an_empty_sign_up_names_every_missing_field_with_422(sqlite_gw, http):
    async with http.post(f"{sqlite_gw.base_url}/api/v1/subscriptions", json={},
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        body = await resp.json()
        assert resp.status == 422
    assert set(body["fields"]) == {"org", "channel", "address", "source", "wording"}


async def test_a_sign_up_is_pending_and_its_confirmation_email_reaches_the_upstream(gw, http,
                                                                                    sink):
    status, body = await subscribe(http, gw)
    assert status == 202
    assert body["status"] == "pending" and body["id"] and body["confirmation_sent"] is True
    [(mail_from, rcpts, raw)] = await sink.wait_for(1)
    message = parsed(raw)
    assert rcpts == [ADDRESS] and mail_from == ""
    assert "Acme Garden Ltd" in message["From"] and "confirm" in message["Subject"].lower()
    assert message["Auto-Submitted"] == "auto-generated"
    assert "List-Unsubscribe" not in message  # a service message: no marketing, no footer
    text = message.get_body(("plain",)).get_content()
    assert SIGNUP["wording"] in text
    assert confirmation_link(raw).startswith(f"{gw.base_url}/c/")
    assert consents(gw) == []  # pending is not evidence
    assert gw.evaluate(ADDRESS).reason == "no_consent"


async def test_the_confirmation_email_is_recorded_as_a_service_message(gw, http, sink):
    await signed_up(http, gw, sink)
    [decision] = gw.rt.ledger.decisions_for(ADDRESS)
    assert (decision["reason"], decision["purpose"], decision["allowed"]) == (
        "service_message", "service", 1)
    [row] = gw.rt.ledger.subscriptions_for(ADDRESS)
    assert row["message_id"] == decision["message_id"] and row["sent_at"]


async def test_opening_the_link_shows_the_org_and_wording_and_confirms_nothing(gw, http,
                                                                                 sink):
    link = await signed_up(http, gw, sink)
    async with http.get(link) as resp:  # what a link scanner does
        page = await resp.text()
        assert resp.status == 200
        assert "Content-Security-Policy" in resp.headers
    assert "Acme Garden Ltd" in page and "<form method=\"post\">" in page
    assert "Yes, send me Acme&#39;s garden offers by email" in page
    assert consents(gw) == []
    assert gw.evaluate(ADDRESS).reason == "no_consent"


async def test_posting_the_link_records_a_confirmed_consent_that_allows_marketing(gw, http,
                                                                                   sink):
    link = await signed_up(http, gw, sink)
    async with http.post(link, headers={"User-Agent": "TestBrowser/1.0"}) as resp:
        assert resp.status == 200
        assert "You are subscribed" in await resp.text()
    [consent] = consents(gw)
    assert (consent["basis"], consent["collected_by"], consent["channel"]) == (
        "consent", "self", "email")
    assert consent["confirmed_at"] and consent["confirmed_at"] == consent["obtained_at"]
    assert SIGNUP["source"] in consent["source"]
    [row] = gw.rt.ledger.subscriptions_for(ADDRESS)
    assert (row["confirmed_ip"], row["confirmed_user_agent"], row["confirmed_via"]) == (
        "127.0.0.1", "TestBrowser/1.0", "link")
    assert row["wording"] == SIGNUP["wording"] and row["evidence_id"] == str(consent["id"])
    decision = gw.evaluate(ADDRESS)
    assert decision.allowed and decision.reason == "consent"


async def test_a_used_link_shows_the_invalid_link_page_and_records_nothing(sqlite_gw, http,
                                                                           sink):
    gw = sqlite_gw
    link = await signed_up(http, gw, sink)
    async with http.post(link) as resp:
        assert resp.status == 200
    for method in (http.get, http.post):
        async with method(link) as resp:
            assert resp.status == 404
            assert "This confirmation link is not valid" in await resp.text()
    assert len(consents(gw)) == 1


async def test_an_expired_link_shows_the_invalid_link_page_and_records_nothing(sqlite_gw, http,
                                                                               sink):
    gw = sqlite_gw
    link = await signed_up(http, gw, sink)
    later = datetime.now(UTC) + timedelta(days=7, minutes=1)
    gw.rt.subscriptions.clock = lambda: later
    for method in (http.get, http.post):
        async with method(link) as resp:
            assert resp.status == 404
    assert consents(gw) == []
    assert gw.evaluate(ADDRESS).reason == "no_consent"


async def test_a_link_just_inside_confirm_within_still_confirms(sqlite_gw, http, sink):
    gw = sqlite_gw
    link = await signed_up(http, gw, sink)
    later = datetime.now(UTC) + timedelta(days=6, hours=23)
    gw.rt.subscriptions.clock = lambda: later
    async with http.post(link) as resp:
        assert resp.status == 200
    assert len(consents(gw)) == 1


async def test_a_forged_link_shows_the_invalid_link_page_and_records_nothing(sqlite_gw, http,
                                                                             sink):
    gw = sqlite_gw
    link = await signed_up(http, gw, sink)
    base, token = link.rsplit("/", 1)
    unsubscribe_token = gw.issue(address=ADDRESS)  # an unsubscribe token is no confirmation
    for bad in (tamper(token), unsubscribe_token, "short"):
        async with http.post(f"{base}/{bad}") as resp:
            assert resp.status == 404
    assert consents(gw) == []


async def test_a_repeat_within_resend_after_sends_nothing_more(sqlite_gw, http, sink):
    gw = sqlite_gw
    _, first = await subscribe(http, gw)
    status, again = await subscribe(http, gw)
    assert status == 202
    assert again["id"] == first["id"]
    assert (again["confirmation_sent"], again["throttled"]) == (False, "resend_after")
    await wait_until_spool_is_empty(gw.running)
    assert len(sink.messages) == 1
    assert len(gw.rt.ledger.subscriptions_for(ADDRESS)) == 1


async def test_a_fourth_request_within_the_hour_sends_nothing(sqlite_gw, http, sink):
    gw = sqlite_gw
    start = datetime.now(UTC)
    answers = []
    for n in range(4):  # each past resend_after (10 minutes), all within one hour
        gw.rt.subscriptions.clock = lambda n=n: start + timedelta(minutes=11 * n)
        answers.append((await subscribe(http, gw))[1])
    assert [a["confirmation_sent"] for a in answers] == [True, True, True, False]
    assert answers[3]["throttled"] == "max_per_hour"
    await wait_until_spool_is_empty(gw.running)
    assert len(sink.messages) == 3
    assert len(gw.rt.ledger.decisions_for(ADDRESS)) == 3
    gw.rt.subscriptions.clock = lambda: start + timedelta(minutes=61)
    assert (await subscribe(http, gw))[1]["confirmation_sent"] is True


async def test_the_hourly_limit_counts_confirmations_to_the_address_from_every_org(
        sqlite_gw, http, sink):
    gw = sqlite_gw
    start = datetime.now(UTC)
    sent = []
    for n, org in enumerate(("acme", "owls", "acme", "owls")):
        gw.rt.subscriptions.clock = lambda n=n: start + timedelta(minutes=11 * n)
        sent.append((await subscribe(http, gw, org=org))[1]["confirmation_sent"])
    assert sent == [True, True, True, False]


async def test_a_bad_sign_up_answers_422_naming_each_field(sqlite_gw, http):
    gw = sqlite_gw
    status, body = await subscribe(http, gw, org="nobody", address="not an address",
                                   wording="", categories="lawnmowers", extra=1)
    assert status == 422
    assert set(body["fields"]) == {"org", "address", "wording", "categories", "extra"}
    assert gw.rt.ledger.subscriptions_for(ADDRESS) == []


async def test_signing_up_needs_the_admin_token(sqlite_gw, http):
    gw = sqlite_gw
    async with http.post(f"{gw.base_url}/api/v1/subscriptions", json=SIGNUP,
                         headers={"Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 401
    assert gw.rt.ledger.subscriptions_for(ADDRESS) == []


async def test_a_consent_scoped_by_the_sign_up_allows_only_its_categories(sqlite_gw, http,
                                                                          sink):
    gw = sqlite_gw
    link = await signed_up(http, gw, sink, categories=["decking"])
    async with http.post(link) as resp:
        assert resp.status == 200
    assert gw.evaluate(ADDRESS).reason == "no_consent"  # acme-news is garden-tools
    from gateway.consent import Classification
    decking = Classification("acme", "acme-news", "marketing", "commercial", "decking")
    assert gw.rt.consent.evaluate(decking, "email", ADDRESS).reason == "consent"


async def test_the_audit_trail_shows_the_sign_up_and_its_confirmation(sqlite_gw, http, sink):
    gw = sqlite_gw
    link = await signed_up(http, gw, sink)
    async with http.post(link) as resp:
        assert resp.status == 200
    async with http.get(f"{gw.base_url}/api/v1/contacts/email/{ADDRESS}?org=acme",
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        trail = await resp.json()
    [row] = trail["subscriptions"]
    assert row["confirmed_at"] and row["wording"] == SIGNUP["wording"]
    assert trail["consents"][0]["confirmed_at"] == row["confirmed_at"]


async def test_many_bad_confirmation_links_from_one_client_are_refused_for_a_while(
        sqlite_gw, http, sink):
    gw = sqlite_gw
    link = await signed_up(http, gw, sink)
    base, token = link.rsplit("/", 1)
    for _ in range(20):
        async with http.get(f"{base}/{tamper(token)}") as resp:
            assert resp.status == 404
    async with http.get(f"{base}/{tamper(token)}") as resp:
        assert resp.status == 429
    async with http.get(link) as resp:  # a well-signed link still works
        assert resp.status == 200


MARKETING = (f"From: news@acme.test\r\nTo: {ADDRESS}\r\nSubject: Spring offers\r\n"
             "Message-ID: <spring-offers@acme.test>\r\n\r\nNew hedge trimmers.\r\n").encode()


async def send_marketing(gw) -> tuple[int, str]:
    """The same marketing email, by SMTP as acme's mailer sends it; the gateway's answer
    (a block comes at RCPT or at the end of DATA, as the contract allows either)."""
    port = gw.rt.settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.login("acme-news", "news-pass")
        try:
            await client.sendmail("news@acme.test", [ADDRESS], MARKETING)
        except aiosmtplib.SMTPRecipientsRefused as refused:
            [answer] = refused.recipients
            return answer.code, answer.message
        except aiosmtplib.SMTPResponseException as refused:
            return refused.code, refused.message
        return 250, "accepted"


async def test_under_eu_de_a_consent_counts_only_after_its_double_opt_in_confirmation(
        tmp_path, sink, http, ledger_url):
    async with signup_gateway(tmp_path, sink, ledger_url,
                              rulesets={"default": "eu-de"}) as gw:
        async with http.post(f"{gw.base_url}/api/v1/consents", json={
                "org": "acme", "channel": "email", "address": ADDRESS, "basis": "consent",
                "obtained_at": datetime.now(UTC).isoformat(), "source": "ticked a box"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
            assert resp.status == 201, await resp.text()
        code, text = await send_marketing(gw)
        assert code == 550 and "consent_unconfirmed" in text
        [blocked] = gw.rt.ledger.decisions_for(ADDRESS)
        assert (blocked["reason"], blocked["ruleset"], blocked["region_source"]) == (
            "consent_unconfirmed", "eu-de", "default")

        link = await signed_up(http, gw, sink)
        async with http.post(link) as resp:
            assert resp.status == 200 and "You are subscribed" in await resp.text()
        assert await send_marketing(gw) == (250, "accepted")
        await wait_until_spool_is_empty(gw.running)
        [(_, rcpts, raw)] = [m for m in sink.messages if b"Spring offers" in m[2]]
        assert rcpts == [ADDRESS] and "List-Unsubscribe" in parsed(raw)
        allowed = gw.rt.ledger.decisions_for(ADDRESS)[0]  # newest first
        assert (allowed["reason"], allowed["ruleset"], allowed["outcome"]) == (
            "consent", "eu-de", "allowed")
