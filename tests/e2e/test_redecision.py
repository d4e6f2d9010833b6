"""Every marketing copy is decided again before each delivery attempt: an opt-out (or the
switch from monitor to enforce) that lands while a copy waits in the spool stops it."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import sqlite3

import aiohttp
import aiosmtplib
import pytest
from gwtest import SOFT_OPT_IN, make_settings, seed, two_more_attempts_each, wait_until_spool_is_empty

from gateway import server
from gateway.ledger.spool import Copy, Marketing, Spool

# The spool table as 0.2 wrote it: no record of what a copy was decided on.
SPOOL_0_2 = ("CREATE TABLE spool (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
             "message_id TEXT, stream TEXT, org TEXT, mail_from TEXT NOT NULL, "
             "rcpt TEXT NOT NULL, data BLOB NOT NULL, created_at REAL NOT NULL, "
             "next_attempt_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
             "status TEXT NOT NULL DEFAULT 'queued', last_error TEXT, finished_at REAL)")
DOWN = "451 4.3.0 upstream resting, try later"
MESSAGE = (b"From: Acme News <news@acme.test>\r\nTo: alice@example.com\r\n"
           b"Subject: Hedge trimmers\r\nMessage-ID: <wait-1@acme.test>\r\n\r\n"
           b"Half price this week.\r\n")


def settings_for(tmp_path, sink, mode: str = "enforce"):
    s = make_settings(tmp_path, mode=mode, upstream=f"smtp://127.0.0.1:{sink.port}?tls=none")
    # Retries come round quickly, so the test sees the copy tried again soon.
    return dataclasses.replace(s, delivery=dataclasses.replace(
        s.delivery, retry_initial=0.1, retry_max=0.2))


async def send(gw, rcpts: list[str], message: bytes = MESSAGE) -> None:
    port = gw.runtime.settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.login("acme-news", "news-pass")
        await client.sendmail("news@acme.test", rcpts, message)


async def opt_out_over_the_api(gw, address: str) -> None:
    http = gw.runtime.settings.http
    async with aiohttp.ClientSession() as session, session.post(
            f"{http.public_url}/api/v1/optouts",
            headers={"Authorization": f"Bearer {http.admin_token}"},
            json={"org": "acme", "channel": "email", "address": address,
                  "source": "phoned the shop"}) as resp:
        assert resp.status == 201, await resp.text()


def delivered_to(sink) -> list[str]:
    return [rcpt for _, rcpts, _ in sink.messages for rcpt in rcpts]


def dsn_reasons(sink) -> list[tuple[str, str]]:
    """(recipient, status text) of every DSN the sink received for news@acme.test."""
    found = []
    for sender, rcpts, data in sink.messages:
        if sender or rcpts != ["news@acme.test"]:
            continue
        report = email.message_from_bytes(data, policy=email.policy.default)
        for part in report.walk():
            if part.get_content_type() == "message/delivery-status":
                text = part.as_string()
                for block in text.split("\n\n"):
                    if "Final-Recipient" in block:
                        found.append((block.split("Final-Recipient:")[1].split("\n")[0],
                                      block))
    return found


async def test_a_copy_waiting_for_the_upstream_is_not_delivered_after_an_opt_out(
        tmp_path, sink):
    sink.reply = DOWN
    async with await server.start(settings_for(tmp_path, sink)) as gw:
        seed(gw.runtime, address="alice@example.com", **SOFT_OPT_IN)
        seed(gw.runtime, address="bob@example.com", **SOFT_OPT_IN)
        await send(gw, ["alice@example.com", "bob@example.com"])
        assert gw.runtime.spool.stats()["depth"] == 2
        await opt_out_over_the_api(gw, "alice@example.com")
        await two_more_attempts_each(gw)
        sink.reply = "250 OK"
        await wait_until_spool_is_empty(gw)
        await asyncio.sleep(0.3)  # the DSN, spooled last, goes out too
        assert "alice@example.com" not in delivered_to(sink)
        assert "bob@example.com" in delivered_to(sink)
        [(rcpt, block)] = dsn_reasons(sink)
        assert "alice@example.com" in rcpt and "opted_out" in block
        trail = gw.runtime.ledger.decisions_for("alice@example.com")[::-1]  # oldest first
        assert [(d["outcome"], d["reason"]) for d in trail][-1] == ("blocked", "opted_out")


async def test_a_copy_accepted_in_monitor_mode_is_dropped_once_the_gateway_enforces(
        tmp_path, sink):
    sink.reply = DOWN
    async with await server.start(settings_for(tmp_path, sink, mode="monitor")) as gw:
        await send(gw, ["nobody@example.com"])  # no evidence: would_block, sent anyway
        assert gw.runtime.spool.stats()["depth"] == 1
    sink.reply = "250 OK"
    async with await server.start(settings_for(tmp_path, sink)) as gw:
        await wait_until_spool_is_empty(gw)
        await asyncio.sleep(0.3)
        assert "nobody@example.com" not in delivered_to(sink)
        [(rcpt, block)] = dsn_reasons(sink)
        assert "nobody@example.com" in rcpt and "no_consent" in block
        trail = gw.runtime.ledger.decisions_for("nobody@example.com")[::-1]  # oldest first
        assert [(d["outcome"], d["reason"]) for d in trail] == [
            ("would_block", "no_consent"), ("blocked", "no_consent")]


async def test_a_copy_still_allowed_when_decided_again_is_delivered_once(tmp_path, sink):
    sink.replies = [DOWN, DOWN]
    async with await server.start(settings_for(tmp_path, sink)) as gw:
        seed(gw.runtime, address="carol@example.com", **SOFT_OPT_IN)
        await send(gw, ["carol@example.com"])
        await sink.wait_for(1)
        await wait_until_spool_is_empty(gw)
        assert delivered_to(sink) == ["carol@example.com"]
        assert [d["reason"] for d in gw.runtime.ledger.decisions_for("carol@example.com")] \
            == ["soft_opt_in"]  # an allowed re-decision is not recorded again


async def test_a_copy_spooled_by_the_previous_version_is_decided_again_too(tmp_path, sink):
    """A 0.2 spool row carries no classification: a copy with our List-Unsubscribe is
    marketing and is decided as its stream classifies."""
    settings = settings_for(tmp_path, sink)
    data_dir = settings.gateway.data_dir
    data_dir.mkdir(parents=True)
    old = sqlite3.connect(data_dir / "spool.db")
    old.execute(SPOOL_0_2)
    copy = (b"From: news@acme.test\r\nTo: dan@example.com\r\nList-Unsubscribe: "
            b"<http://x/u/abc>\r\nMessage-ID: <old-1@acme.test>\r\n\r\nOffers.\r\n")
    old.execute("INSERT INTO spool (kind, message_id, stream, org, mail_from, rcpt, data, "
                "created_at, next_attempt_at) VALUES ('copy', '<old-1@acme.test>', "
                "'acme-news', 'acme', 'news@acme.test', 'dan@example.com', ?, 0, 0)", (copy,))
    old.commit()
    old.close()
    async with await server.start(settings) as gw:
        await wait_until_spool_is_empty(gw)
        await asyncio.sleep(0.3)
        assert "dan@example.com" not in delivered_to(sink)
        assert gw.runtime.ledger.decisions_for("dan@example.com")[0]["reason"] == "no_consent"


def test_a_spool_of_the_previous_version_gains_the_new_columns(tmp_path):
    path = tmp_path / "spool.db"
    old = sqlite3.connect(path)
    old.execute(SPOOL_0_2)
    old.close()
    spool = Spool(tmp_path)
    try:
        columns = {r[1] for r in spool.conn.execute("PRAGMA table_info(spool)")}
        assert {"address", "purpose", "nature", "category"} <= columns
    finally:
        spool.close()


@pytest.mark.parametrize("marketing", [
    Marketing("eve@example.com", "marketing", "campaigning", "decking"),
    Marketing("eve@example.com", "marketing", "commercial", None), None])
def test_the_spool_keeps_what_a_marketing_copy_was_decided_on(tmp_path, marketing):
    spool = Spool(tmp_path)
    try:
        spool.enqueue([Copy("copy", "a@b.test", "Eve@Example.com", b"x", "<1@b>", "s", "o",
                            marketing)])
        [back] = spool.take(10)
        assert back.copy.marketing == marketing
    finally:
        spool.close()


# -- the cheap check: one count instead of a whole decision, when it must give the same ----


def stamped(rt, address: str):
    from gateway.consent import classify
    return rt.consent.assess(classify(rt.settings.stream("acme-news")), "email", address)


def test_an_allowing_decision_still_allows_while_the_persons_opt_out_rows_are_unchanged(
        tmp_path):
    from gateway.runtime import Runtime
    rt = Runtime.open(make_settings(tmp_path))
    try:
        seed(rt, address="amy@example.com", **SOFT_OPT_IN)
        decision, seen = stamped(rt, "amy@example.com")
        assert decision.allowed and seen == 0
        seed(rt, address="amy@example.com", basis="consent")  # more evidence: still allows
        assert rt.consent.still_allows("acme", "amy@example.com", rt.consent.incarnation, seen)
        rt.ledger.record_opt_out("acme", "email", "amy@example.com", source="phone")
        assert not rt.consent.still_allows("acme", "amy@example.com", rt.consent.incarnation,
                                           seen)  # decide again in full
        rt.ledger.record_opt_out("*", "sms", "amy@example.com", source="any org, any row")
        assert rt.ledger.opt_out_count("acme", "amy@example.com") == 2
    finally:
        rt.close()


def test_a_decision_of_another_run_or_one_that_can_lapse_is_always_decided_in_full(tmp_path):
    from gateway.runtime import Runtime
    rt = Runtime.open(make_settings(tmp_path))
    try:
        seed(rt, address="bea@example.com", **SOFT_OPT_IN)
        decision, seen = stamped(rt, "bea@example.com")
        assert not rt.consent.still_allows("acme", "bea@example.com", "an-earlier-run", seen)
        blocked, none_seen = stamped(rt, "nobody@example.com")
        assert not blocked.allowed and none_seen is None  # only allowing decisions stamp
    finally:
        rt.close()
    aged = make_settings(tmp_path / "aged")
    aged = dataclasses.replace(aged, orgs={k: dataclasses.replace(
        o, soft_opt_in_max_age_days=400) for k, o in aged.orgs.items()})
    rt = Runtime.open(aged)
    try:
        seed(rt, address="bea@example.com", **SOFT_OPT_IN)
        decision, seen = stamped(rt, "bea@example.com")
        assert decision.allowed and seen is None  # it may lapse with time: no stamp
    finally:
        rt.close()
