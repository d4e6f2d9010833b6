"""Minimal data in logs and metrics (docs/privacy.md): after traffic that puts addresses in
every place they could leak from (upstream replies naming the recipient, refused relays,
opt-outs, texts, an erasure), no `event=` line of the whole test session, no /metrics label
and no /status list holds an unmasked address. Named to run last in a full run, so it scans
the lines of every in-process gateway the suite started."""

from __future__ import annotations

import base64
import contextlib
import re

import aiohttp
import aiosmtplib
from gwtest import EVENT_LINES, SOFT_OPT_IN, make_settings, seed, wait_until_spool_is_empty

from gateway import server

PEOPLE = ["leaky.lena@example.com", "leaky.leo@example.com", "leaky.liv@example.com"]
PHONE = "+447400123999"
# An email address or an international number, unless masked as addresses.mask masks them
# ("j•••@example.com", "+44•••••••456").
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE_NUMBER = re.compile(r"\+\d{8,15}")
# Fields holding no person's address: message ids look like addresses, SMTP users and
# the org's own senders are not people.
NOT_PEOPLE = ("message_id", "user")


def fields(line: str) -> list[tuple[str, str]]:
    return re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line)


def unmasked(line: str) -> list[str]:
    found = []
    for key, value in fields(line):
        if key in NOT_PEOPLE:
            continue
        for m in EMAIL.finditer(value):
            local = m.group(0).split("@")[0]
            if not (len(local) == 1 or local.endswith("•••")) and not value.startswith("<"):
                found.append(f"{key}={m.group(0)}")
        found += [f"{key}={m.group(0)}" for m in PHONE_NUMBER.finditer(value)]
    return found


def test_the_scan_finds_an_unmasked_address_and_passes_a_masked_one():
    assert unmasked("event=opt_out address=jane@example.com") == ["address=jane@example.com"]
    assert unmasked('event=deferred error="451 <jane@example.com> busy"')
    assert unmasked("event=sms_sent to=+447400123456")
    assert unmasked("event=opt_out address=j•••@example.com to=+44•••••••456") == []
    assert unmasked("event=delivered message_id=<abc@acme.test>") == []


async def test_no_log_line_metric_label_or_status_list_holds_an_unmasked_address(
        tmp_path, sink):
    sink.replies = [f"451 4.2.0 <{PEOPLE[0]}>: mailbox busy",
                    f"550 5.1.1 <{PEOPLE[1]}>: no such user here"]
    settings = make_settings(tmp_path, upstream=f"smtp://127.0.0.1:{sink.port}?tls=none")
    async with await server.start(settings) as gw:
        for who in PEOPLE:
            seed(gw.runtime, address=who, **SOFT_OPT_IN)
        seed(gw.runtime, address=PHONE, channel="sms", basis="consent", source="till")
        port = settings.smtp.listen.port
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            await client.login("acme-news", "news-pass")
            await client.sendmail("news@acme.test", PEOPLE[:2],
                                  b"Subject: Offer\r\n\r\nHedge trimmers.\r\n")
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            with contextlib.suppress(aiosmtplib.SMTPException):  # no AUTH: relay denied
                await client.sendmail("x@elsewhere.test", [PEOPLE[2]], b"Subject: x\r\n\r\nx\r\n")
        await wait_until_spool_is_empty(gw, timeout=20)
        base, token = settings.http.public_url, settings.http.admin_token
        admin = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/v1/sms", json={"to": PHONE, "body": "Sale"},
                                 headers={"Authorization": "Bearer sk_news"}) as resp:
                assert resp.status == 202
            async with http.post(f"{base}/api/v1/optouts", headers=admin, json={
                    "org": "acme", "channel": "all", "address": PEOPLE[2],
                    "source": "phoned"}) as resp:
                assert resp.status == 201
            async with http.post(f"{base}/api/v1/erasures", headers=admin, json={
                    "channel": "email", "address": PEOPLE[0], "org": "*",
                    "source": "letter"}) as resp:
                assert resp.status == 201
            login = {"Authorization": "Basic " + base64.b64encode(f"ops:{token}".encode()
                                                                   ).decode()}
            async with http.get(f"{base}/metrics", headers=login) as resp:
                metrics = await resp.text()
            async with http.get(f"{base}/status", headers=login) as resp:
                status = await resp.text()
            async with http.get(f"{base}/status", headers=login,
                                params={"address": PEOPLE[1]}) as resp:
                person_view = await resp.text()
    for who in (*PEOPLE, PHONE):
        assert who not in metrics and who not in status
    assert PEOPLE[1] in person_view  # the person an operator searched for, in full
    lines = EVENT_LINES.lines
    assert any("leaky" in line or "l•••@" in line for line in lines)  # the traffic was seen
    leaks = [(line, found) for line in lines if (found := unmasked(line))]
    assert leaks == []
