"""Deferred texts end to end, the gateway's clock under Debian's `faketime` (libfaketime):
started at 07:59:30 in New York, a marketing text to a New York number is answered
"deferred" (Twilio path: "scheduled"), held, and reaches the provider after 08:00; an
opt-out in between drops another; a restart in between keeps it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest
from gwprocess import ADMIN, SMS_KEY, GatewayProcess

from gateway.evidence import parse_evidence
from gateway.ledger import open_ledger

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
pytestmark = pytest.mark.skipif(not LIBFAKETIME.exists(),
                                reason="needs Debian's faketime (apt-get install faketime)")

AMY, BEN = "+12125550100", "+12125550101"  # New York
EIGHT_NY = "2026-06-03T12:00:00+00:00"  # 08:00 EDT
RULESETS = ('name = "Acme Garden Ltd"\nrulesets = { default = "uk-pecr", US = "us" }\n'
            'postal_address = "1 Garden Way, Leeds LS1 1AA"\ncontact = "hello@acme.test"\n'
            'brand = "Acme"\n')


def gateway_at(tmp_path, utc: str) -> GatewayProcess:
    gw = GatewayProcess(tmp_path, upstream=f"maildir:{tmp_path / 'mail'}",
                        env=clock(utc))
    gw.config.write_text(gw.config.read_text().replace('name = "Acme Garden Ltd"\n',
                                                       RULESETS, 1))
    ledger = open_ledger("", gw.data_dir)
    for number in (AMY, BEN):
        ledger.record_evidence(parse_evidence({
            "org": "acme", "channel": "sms", "address": number, "basis": "consent",
            "written": True, "obtained_at": "2026-01-05T10:00:00Z",
            "source": "signed e-consent form v2"}, {"acme": "GB"}), "test")
    ledger.close()
    return gw


def clock(utc: str) -> dict[str, str]:
    """The environment that starts the gateway's clock at `utc` (then it runs on), as the
    `faketime` command sets it (the threaded library: the gateway has threads)."""
    return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": f"@{utc}", "TZ": "UTC"}


def sent_texts(gw: GatewayProcess) -> list[dict]:
    if not gw.outbox.exists():
        return []
    return [json.loads(line) for line in gw.outbox.read_text().splitlines() if line]


def wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return found


async def deferred_on_status(session, gw) -> dict:
    async with session.get(f"{gw.url}/status.json", headers=ADMIN) as resp:
        assert resp.status == 200
        return (await resp.json())["components"]["deferred_texts"]


async def test_a_text_at_0759_in_new_york_waits_for_0800_and_an_opt_out_drops_another(
        tmp_path):
    gw = gateway_at(tmp_path, "2026-06-03 11:59:30").start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{gw.url}/api/v1/sms", headers=SMS_KEY,
                                    json={"to": AMY, "body": "Hedge trimmers half price"}
                                    ) as resp:
                answer = await resp.json()
                assert resp.status == 202, answer
            assert (answer["status"], answer["send_at"]) == ("deferred", EIGHT_NY)
            decision = answer["decision"]
            assert (decision["reason"], decision["outcome"], decision["ruleset"],
                    decision["region"], decision["region_source"]) == (
                "quiet_hours", "defer", "us", "US", "number")
            async with session.post(
                    f"{gw.url}/2010-04-01/Accounts/acme-news/Messages.json",
                    auth=None, headers=basic("acme-news", "sk_news"),
                    data={"To": BEN, "Body": "Hedge trimmers half price"}) as resp:
                resource = await resp.json()
                assert resp.status == 201, resource
            assert (resource["status"], resource["date_sent"]) == ("scheduled", None)
            assert await deferred_on_status(session, gw) == {"count": 2,
                                                            "next_send_at": EIGHT_NY[:19]
                                                            + "+00:00"}
            async with session.post(f"{gw.url}/api/v1/optouts", headers=ADMIN,
                                    json={"org": "acme", "channel": "sms", "address": BEN,
                                          "source": "called the shop"}) as resp:
                assert resp.status == 201
            assert sent_texts(gw) == []  # nothing before 08:00
            [text] = wait_for(lambda: sent_texts(gw), "the text after 08:00")
            assert text["to"] == AMY
            assert text["body"] == "Acme: Hedge trimmers half price\nReply STOP to opt out"
            wait_for(lambda: deferred_count(gw) == 0, "every held text to be done")
            assert [t["to"] for t in sent_texts(gw)] == [AMY]
    finally:
        assert gw.terminate() == 0
    ledger = open_ledger("", gw.data_dir)
    try:
        amy = ledger.decisions_for(AMY)  # newest first
        assert [(d["outcome"], d["reason"]) for d in amy] == [
            ("allowed", "consent"), ("defer", "quiet_hours")]
        assert amy[0]["at"] >= EIGHT_NY
        ben = ledger.decisions_for(BEN)
        assert [(d["outcome"], d["reason"]) for d in ben] == [
            ("blocked", "opted_out"), ("defer", "quiet_hours")]
    finally:
        ledger.close()


async def test_a_held_text_survives_a_restart_and_goes_after_0800(tmp_path):
    gw = gateway_at(tmp_path, "2026-06-03 11:59:40").start()
    try:
        async with aiohttp.ClientSession() as session, session.post(
                f"{gw.url}/api/v1/sms", headers=SMS_KEY,
                json={"to": AMY, "body": "Acme: hedge trimmers"}) as resp:
            answer = await resp.json()
            assert (resp.status, answer["status"]) == (202, "deferred"), answer
    finally:
        assert gw.terminate() == 0
    assert deferred_count(gw) == 1
    gw.env = clock("2026-06-03 11:59:50")
    gw.start()
    try:
        [text] = wait_for(lambda: sent_texts(gw), "the text after the restart")
        assert text["body"] == "Acme: hedge trimmers\nReply STOP to opt out"
    finally:
        assert gw.terminate() == 0


def deferred_count(gw: GatewayProcess) -> int:
    from gateway.ledger.deferred import DeferredTexts

    store = DeferredTexts(gw.data_dir)
    try:
        return store.stats()["count"]
    finally:
        store.close()


def basic(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()
                                                         ).decode()}
