"""Hostile HTTP clients: forged and replayed provider webhooks, unsubscribe-token guessing,
markup in every field a page shows, and path tricks against the maildir upstream.

Replay protection, as it stands:
- Twilio signs the URL and the form, no timestamp: a captured webhook verifies forever.
  The gateway therefore handles each `MessageSid` once: a repeated STOP/START records
  nothing and sends no second confirmation, so a replayed START cannot undo a later STOP.
- Vonage signs a `timestamp` too; more than 5 minutes off is refused (403). Within the
  window the same `messageId` rule applies.
- Non-keyword replies are forwarded to the app each time they arrive, re-signed, with
  their MessageSid: the app can spot a repeat."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import re
import time

import aiohttp
import aiosmtplib
import pytest
from gwtest import SOFT_OPT_IN, make_settings, seed

from gateway import server
from gateway.config import TwilioSettings, VonageSettings
from gateway.sms.signatures import twilio_signature
from gateway.web.ratelimit import BAD_LINKS_PER_WINDOW

pytestmark = pytest.mark.timeout(60)

TWILIO_TOKEN = "twilio-auth-token"
VONAGE_SECRET = "vonage-signing-secret"
PERSON = "+447400123456"
OUR_NUMBER = "+447400123000"
ADMIN = {"Authorization": "Bearer test-admin-token"}
OPERATOR = {"Authorization": "Basic " + base64.b64encode(b"op:test-admin-token").decode()}
XSS = ['<script>alert(1)</script>', '"><img src=x onerror=alert(2)>', "javascript:alert(3)"]


@pytest.fixture
async def gw(tmp_path):
    settings = make_settings(tmp_path, org_name="Acme <script>alert(1)</script> Ltd")
    sms = dataclasses.replace(
        settings.sms, twilio=TwilioSettings("AC0123", TWILIO_TOKEN, "http://127.0.0.1:9"),
        vonage=VonageSettings("key", "secret", VONAGE_SECRET, "http://127.0.0.1:9",
                              "sha256"))
    running = await server.start(dataclasses.replace(settings, sms=sms))
    seed(running.runtime, channel="sms", address=PERSON, basis="consent", source="form")
    yield running
    await running.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def base(gw) -> str:
    return gw.runtime.settings.http.public_url


def opt_out_rows(gw) -> list[dict]:
    return gw.runtime.ledger.opt_out_rows(PERSON)


async def twilio_webhook(gw, http, body: str, sid: str, *, token: str = TWILIO_TOKEN,
                         signed_url: str | None = None, sign_body: str | None = None,
                         signature: str | None = None) -> tuple[int, str]:
    form = {"MessageSid": sid, "From": PERSON, "To": OUR_NUMBER, "Body": body}
    signed = dict(form, Body=sign_body) if sign_body is not None else form
    url = signed_url or base(gw) + "/sms/inbound/twilio"
    sig = signature if signature is not None else twilio_signature(url, signed, token)
    async with http.post(base(gw) + "/sms/inbound/twilio", data=form,
                         headers={"X-Twilio-Signature": sig}) as resp:
        return resp.status, await resp.text()


def vonage_signed(text: str, message_id: str, *, secret: str = VONAGE_SECRET,
                  timestamp: float | None = None, method=hashlib.sha256) -> dict[str, str]:
    params = {"msisdn": PERSON[1:], "to": OUR_NUMBER[1:], "text": text,
              "messageId": message_id, "type": "text", "nonce": os.urandom(4).hex(),
              "timestamp": str(int(time.time() if timestamp is None else timestamp))}
    data = "".join(f"&{k}={v.replace('&', '_').replace('=', '_')}"
                   for k, v in sorted(params.items()))
    params["sig"] = hmac.new(secret.encode(), data.encode(), method).hexdigest()
    return params


async def vonage_webhook(gw, http, params: dict[str, str]) -> int:
    async with http.post(base(gw) + "/sms/inbound/vonage", data=params) as resp:
        return resp.status


async def send_text(gw, http) -> tuple[int, dict]:
    async with http.post(base(gw) + "/api/v1/sms", json={"to": PERSON, "body": "Sale"},
                         headers={"Authorization": "Bearer sk_news"}) as resp:
        return resp.status, await resp.json()


# -- forged webhooks -------------------------------------------------------------------------


@pytest.mark.parametrize("forgery", [
    dict(token="another-accounts-token"),
    dict(signed_url="http://evil.test/sms/inbound/twilio"),
    dict(sign_body="HELLO"),
    dict(signature=""),
    dict(signature="not base64 at all %%%"),
    dict(signature=base64.b64encode(b"\0" * 20).decode()),
], ids=["wrong-token", "other-url", "altered-body", "empty", "garbage", "zeros"])
async def test_a_forged_twilio_webhook_is_refused_and_records_nothing(gw, http, forgery):
    status, _ = await twilio_webhook(gw, http, "STOP", "SMforged", **forgery)
    assert status == 403
    assert opt_out_rows(gw) == []


@pytest.mark.parametrize("forgery", [
    dict(secret="another-secret"),
    dict(timestamp=-600),
    dict(timestamp=600),
    dict(method=hashlib.md5),
], ids=["wrong-secret", "stale-timestamp", "future-timestamp", "other-method"])
async def test_a_forged_or_stale_vonage_webhook_is_refused(gw, http, forgery):
    if "timestamp" in forgery:  # seconds from now, when the test runs (not when collected)
        forgery = {"timestamp": time.time() + forgery["timestamp"]}
    assert await vonage_webhook(gw, http, vonage_signed("STOP", "0A01", **forgery)) == 403
    assert opt_out_rows(gw) == []


async def test_a_vonage_webhook_without_a_timestamp_is_refused(gw, http):
    params = vonage_signed("STOP", "0A02")
    del params["timestamp"]
    assert await vonage_webhook(gw, http, params) == 403


# -- replays ---------------------------------------------------------------------------------


async def test_a_replayed_twilio_start_cannot_undo_a_later_stop(gw, http):
    assert (await twilio_webhook(gw, http, "START", "SMstart1"))[0] == 200
    assert (await twilio_webhook(gw, http, "STOP", "SMstop2"))[0] == 200
    status, twiml = await twilio_webhook(gw, http, "START", "SMstart1")  # the replay
    assert status == 200 and "<Message>" not in twiml
    assert [r["kind"] for r in opt_out_rows(gw)] == ["optin", "optout"]
    status, answer = await send_text(gw, http)
    assert (status, answer["reason"]) == (403, "opted_out")


async def test_a_repeated_twilio_stop_counts_once_and_confirms_once(gw, http):
    first = await twilio_webhook(gw, http, "STOP", "SMstop9")
    again = await twilio_webhook(gw, http, "STOP", "SMstop9")
    assert "<Message>" in first[1] and "<Message>" not in again[1]
    assert len(opt_out_rows(gw)) == 1


async def test_a_replayed_vonage_stop_within_the_window_counts_once(gw, http):
    params = vonage_signed("STOP", "0A0000042")
    assert await vonage_webhook(gw, http, params) == 204
    assert await vonage_webhook(gw, http, params) == 204
    assert len(opt_out_rows(gw)) == 1
    await asyncio.sleep(0.3)  # confirmations go out in the background
    outbox = gw.runtime.settings.sms.outbox
    lines = outbox.read_text("utf-8").splitlines() if outbox.exists() else []
    assert len(lines) == 1, "one confirmation only"


# -- guessing unsubscribe tokens ---------------------------------------------------------------


def stored_link(gw, channel: str = "email") -> str:
    token, record = gw.runtime.tokens.issue(org="acme", channel=channel,
                                            address="jane@example.com", stream="acme-news",
                                            message_id="<m@acme.test>")
    gw.runtime.ledger.record_tokens([record])
    return f"/{'u' if channel == 'email' else 's'}/{token}"


async def test_guessing_tokens_is_rate_limited_and_real_links_still_work(gw, http):
    good = stored_link(gw)
    statuses = []
    for i in range(BAD_LINKS_PER_WINDOW + 5):
        path = f"/{'us'[i % 2]}/{os.urandom(20).hex()[:32]}"
        method = http.post if i % 3 == 0 else http.get
        async with method(base(gw) + path) as resp:
            statuses.append(resp.status)
            retry_after = resp.headers.get("Retry-After")
    assert statuses[:BAD_LINKS_PER_WINDOW] == [404] * BAD_LINKS_PER_WINDOW
    assert statuses[BAD_LINKS_PER_WINDOW:] == [429] * 5
    assert retry_after and 0 < int(retry_after) <= 60
    # A real link always works, even from the limited address (behind a proxy, every
    # client has that address: a guesser must not block people from unsubscribing).
    async with http.get(base(gw) + good) as resp:
        assert resp.status == 200
    other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=other) as elsewhere:
        async with elsewhere.get(base(gw) + good) as resp:
            assert resp.status == 200
        async with elsewhere.post(base(gw) + good, data={"scope": "channel"}) as resp:
            assert resp.status == 200
    assert len(gw.runtime.ledger.opt_out_rows("jane@example.com")) == 1


async def test_valid_links_never_count_towards_the_limit(gw, http):
    good = stored_link(gw)
    for _ in range(BAD_LINKS_PER_WINDOW * 2):
        async with http.get(base(gw) + good) as resp:
            assert resp.status == 200


# -- markup in every field a page shows ---------------------------------------------------------


def assert_escaped(html: str, where: str) -> None:
    for payload in XSS[:2]:
        assert payload not in html, f"unescaped markup on {where}"
    assert not re.search(r"""(?:href|src|action)\s*=\s*["']?\s*javascript:""", html, re.I), where


async def test_markup_in_every_shown_field_is_escaped(gw, http):
    rt = gw.runtime
    person = "jane@example.com"
    seed(rt, address=person, **SOFT_OPT_IN)
    for payload in XSS:
        async with http.post(base(gw) + "/api/v1/consents", headers=ADMIN, json={
                "org": "acme", "channel": "email", "address": person, "basis": "soft_opt_in",
                "context": "sale", "opt_out_offered": True, "categories": [payload],
                "obtained_at": "2026-01-01T00:00:00Z", "source": payload}) as resp:
            assert resp.status == 201
        async with http.post(base(gw) + "/api/v1/optouts", headers=ADMIN, json={
                "org": "acme", "channel": "sms", "address": "+447400999999",
                "source": payload}) as resp:
            assert resp.status == 201
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=rt.settings.smtp.listen.port,
                               start_tls=False) as client:
        await client.login("acme-news", "news-pass")
        for payload in XSS:
            with contextlib.suppress(aiosmtplib.SMTPDataError):  # blocked is recorded too
                await client.sendmail("news@acme.test", [person], (
                    f"From: {payload} <news@acme.test>\r\nTo: {person}\r\n"
                    f"Subject: {payload}\r\nMessage-ID: <{payload}@acme.test>\r\n"
                    f"X-Gateway-Category: {payload}\r\n\r\nHello\r\n").encode())
    assert len(rt.ledger.decisions_for(person)) == len(XSS)
    rt.note("upstream", False, XSS[0] + XSS[1])  # an upstream's error text is shown too
    link = stored_link(gw)
    pages = {
        "status": "/status", "status-person": f"/status?address={person}",
        "status-reflected-address": "/status?address=" + XSS[0],
        "status-reflected-reason": "/status?reason=" + XSS[1],
        "status-sms-person": "/status?address=%2B447400999999",
    }
    shown = ""
    for name, path in pages.items():
        async with http.get(base(gw) + path, headers=OPERATOR) as resp:
            assert resp.status == 200, name
            shown += await resp.text()
            assert_escaped(shown, name)
    # The payloads are on the pages, escaped: the test is not passing by omission.
    assert shown.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in shown
    for path in (link, f"/u/{XSS[0]}", f"/s/{XSS[1]}"):
        async with http.get(base(gw) + path) as resp:
            assert_escaped(await resp.text(), path)
            if resp.content_type == "text/html":
                assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    async with http.post(base(gw) + link, data={"scope": "all"}) as resp:
        assert resp.status == 200
        assert_escaped(await resp.text(), "confirmation")
    async with http.get(base(gw) + "/status.json", headers=OPERATOR) as resp:
        assert resp.content_type == "application/json"
        json.loads(await resp.text())


# -- path tricks against the maildir upstream ---------------------------------------------------


async def test_nothing_a_sender_controls_can_write_outside_the_maildir(tmp_path):
    settings = make_settings(tmp_path)
    settings = dataclasses.replace(settings, smtp=dataclasses.replace(
        settings.smtp, hostname="../../escaped/host:name"))
    outbox = tmp_path / "outbox"
    rcpts = ["a/b@example.com", "x/y/z@example.com", "dots.in.name@example.com"]
    async with await server.start(settings) as gw:
        for rcpt in rcpts:
            seed(gw.runtime, address=rcpt, basis="consent", source="form")
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.runtime.settings.smtp
                                   .listen.port, start_tls=False) as client:
            await client.login("acme-news", "news-pass")
            for i, rcpt in enumerate(rcpts):
                await client.sendmail("../../../etc/passwd@acme.test", [rcpt], (
                    f"From: ../../x <news@acme.test>\r\nTo: {rcpt}\r\n"
                    f"Message-ID: <../../../../../tmp/evil{i}/..@acme.test>\r\n"
                    f"Subject: ../../../\r\n\r\nhi\r\n").encode())
        deadline = time.monotonic() + 10
        while len(list((outbox / "new").iterdir())) < len(rcpts):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    outside = {p for p in written if p.parts[0] not in ("outbox", "data")}
    assert outside == set(), outside
    names = [p.name for p in (outbox / "new").iterdir()]
    assert all(re.fullmatch(r"\d+\.G\d+_[0-9a-f]{12}\.[^/:]+", n) for n in names), names
    assert not (tmp_path.parent / "escaped").exists()
