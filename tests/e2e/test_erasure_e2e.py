"""Erasure end to end (docs/privacy.md), on both ledger backends: through the admin API and
`gateway erase`, mail and texts to the person are blocked with `erased`, their old links
show the invalid-link page, only a new specific consent allows again, and copies waiting in
the spool are never delivered."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import uuid
from datetime import UTC, datetime

import aiohttp
import aiosmtplib
import pytest
from gwprocess import config_text
from gwtest import (
    SOFT_OPT_IN,
    free_port,
    make_settings,
    seed,
    traces_in_ledger,
    wait_until_spool_is_empty,
)

from gateway import server
from gateway.cli import main

PERSON = "zelda.quartermain@example.com"
PHONE = "+447400123456"
OTHER = "otto.other@example.com"
DOWN = "451 4.3.0 upstream resting, try later"


def message(to: str = PERSON) -> bytes:
    return (f"From: Acme News <news@acme.test>\r\nTo: {to}\r\nSubject: Hedge trimmers\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@acme.test>\r\n\r\nHalf price this week.\r\n"
            ).encode()


def settings_for(tmp_path, sink, ledger_url):
    s = make_settings(tmp_path, upstream=f"smtp://127.0.0.1:{sink.port}?tls=none",
                      ledger_url=ledger_url)
    return dataclasses.replace(s, delivery=dataclasses.replace(
        s.delivery, retry_initial=0.1, retry_max=0.2))


async def send(gw, rcpts: list[str]) -> dict:
    port = gw.runtime.settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.login("acme-news", "news-pass")
        refused, _ = await client.sendmail("news@acme.test", rcpts, message(rcpts[0]))
        return refused


class Admin:
    """The admin API of a running gateway."""

    def __init__(self, gw, http: aiohttp.ClientSession):
        self.base = gw.runtime.settings.http.public_url
        self.headers = {"Authorization": f"Bearer {gw.runtime.settings.http.admin_token}"}
        self.http = http

    async def post(self, path: str, body: dict, headers: dict | None = None
                   ) -> tuple[int, dict]:
        async with self.http.post(self.base + path, json=body,
                                  headers=self.headers if headers is None else headers) as r:
            return r.status, await r.json()

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.base + path, headers=self.headers) as r:
            return r.status, await r.text()

    async def erase(self, address: str, channel: str = "email", org: str = "*",
                    source: str = "letter of 2 May") -> tuple[int, dict]:
        return await self.post("/api/v1/erasures", {"channel": channel, "address": address,
                                                    "org": org, "source": source})

    async def text(self, to: str) -> tuple[int, dict]:
        return await self.post("/api/v1/sms", {"to": to, "body": "Spring sale"},
                               headers={"Authorization": "Bearer sk_news"})


@pytest.fixture
async def admin_http():
    async with aiohttp.ClientSession() as http:
        yield http


async def test_an_erasure_through_the_api_blocks_mail_and_texts_and_kills_old_links(
        tmp_path, sink, ledger_url, admin_http):
    async with await server.start(settings_for(tmp_path, sink, ledger_url)) as gw:
        api = Admin(gw, admin_http)
        seed(gw.runtime, address=PERSON, basis="consent", source="newsletter form")
        seed(gw.runtime, address=PHONE, channel="sms", basis="consent", source="till")
        await send(gw, [PERSON])
        [(_, _, data)] = await sink.wait_for(1)
        link = re.search(rb"/u/([a-z0-9]{32})", data).group(0).decode()
        assert (await api.text(PHONE))[0] == 202

        status, answer = await api.erase(PERSON)
        assert status == 201, answer
        assert answer["removed"] == {"evidence": 1, "opt_outs": 0, "tokens": 1, "decisions": 1,
                                     "outside_events": 0, "copies": 0, "deferred_texts": 0}
        assert (await api.erase(PHONE, channel="sms"))[0] == 201

        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await send(gw, [PERSON])
        assert refused.value.code == 550 and "erased" in refused.value.message
        status, answer = await api.text(PHONE)
        assert (status, answer["reason"]) == (403, "erased")
        status, page = await api.get(link)
        assert status == 404 and "This link is not valid" in page

        status, page = await api.get(f"/api/v1/contacts/email/{PERSON}")
        contact = json.loads(page)
        assert (contact["consents"], contact["opt_outs"]) == ([], [])
        assert [d["reason"] for d in contact["decisions"]] == []
        [erasure] = contact["erasures"]
        assert (erasure["org"], erasure["source"], erasure["channel"]) == (
            "*", "letter of 2 May", "email")
        assert erasure["at"]

        # A soft opt-in (another purchase) does not lift it; signing up again does.
        seed(gw.runtime, address=PERSON, obtained_at=datetime.now(UTC).isoformat(),
             **SOFT_OPT_IN)
        with pytest.raises(aiosmtplib.SMTPResponseException):
            await send(gw, [PERSON])
        status, _ = await api.post("/api/v1/consents", {
            "org": "acme", "channel": "email", "address": PERSON, "basis": "consent",
            "obtained_at": datetime.now(UTC).isoformat(), "source": "signed up again"})
        assert status == 201
        assert await send(gw, [PERSON]) == {}


async def test_an_erasure_request_is_checked_field_by_field_and_needs_the_admin_token(
        tmp_path, sink, admin_http):
    async with await server.start(settings_for(tmp_path, sink, "")) as gw:
        api = Admin(gw, admin_http)
        status, answer = await api.post("/api/v1/erasures", {
            "channel": "fax", "address": "", "org": "nobody", "source": "", "extra": 1})
        assert status == 422
        assert set(answer["fields"]) == {"channel", "address", "org", "source", "extra"}
        status, answer = await api.erase(PERSON, source=f"asked by {PERSON.upper()}")
        assert status == 422 and "must not contain the address" in answer["fields"]["source"]
        status, _ = await api.post("/api/v1/erasures", {"channel": "email", "address": PERSON,
                                                         "org": "*", "source": "x"}, headers={})
        assert status == 401
        assert gw.runtime.ledger._tuples("SELECT COUNT(*) FROM suppressions")[0][0] == 0


async def test_a_copy_waiting_in_the_spool_is_erased_with_its_person(
        tmp_path, sink, ledger_url, admin_http):
    sink.reply = DOWN
    async with await server.start(settings_for(tmp_path, sink, ledger_url)) as gw:
        seed(gw.runtime, address=PERSON, **SOFT_OPT_IN)
        seed(gw.runtime, address=OTHER, **SOFT_OPT_IN)
        await send(gw, [PERSON, OTHER])
        assert gw.runtime.spool.stats()["depth"] == 2
        status, answer = await Admin(gw, admin_http).erase(PERSON, org="acme")
        assert status == 201 and answer["removed"]["copies"] == 1
        sink.reply = "250 OK"
        await wait_until_spool_is_empty(gw)
        assert sorted(r for _, rcpts, _ in sink.messages for r in rcpts) == sorted(
            [OTHER, "news@acme.test"])
        with gw.runtime.spool._lock:
            held = gw.runtime.spool.conn.execute(
                "SELECT COUNT(*) FROM spool WHERE rcpt = ?", (PERSON,)).fetchone()[0]
        assert held == 0


async def test_the_sender_of_an_erased_waiting_copy_gets_one_dsn_naming_the_reason(
        tmp_path, sink, ledger_url, admin_http):
    sink.reply = DOWN
    async with await server.start(settings_for(tmp_path, sink, ledger_url)) as gw:
        seed(gw.runtime, address=PERSON, **SOFT_OPT_IN)
        await send(gw, [PERSON])
        status, answer = await Admin(gw, admin_http).erase(PERSON, org="acme")
        assert status == 201 and answer["removed"]["copies"] == 1
        sink.reply = "250 OK"
        await wait_until_spool_is_empty(gw)
    [(sender, rcpts, dsn)] = sink.messages
    assert (sender, rcpts) == ("", ["news@acme.test"])
    report = dsn.decode()
    assert f"Final-Recipient: rfc822; {PERSON}" in report
    assert "blocked before delivery: erased" in report and "Half price" not in report


OWLS_STREAM = """
[[stream]]
id = "owls-appeal"
org = "owls"
purpose = "marketing"
nature = "campaigning"
category = "appeal"
smtp_username = "owls-appeal"
smtp_password = "owls-pass"
api_key = "sk_owls"
"""


async def test_an_erasure_for_one_org_leaves_another_orgs_waiting_copy_to_the_person(
        tmp_path, sink, ledger_url, admin_http):
    sink.reply = DOWN
    s = make_settings(tmp_path, upstream=f"smtp://127.0.0.1:{sink.port}?tls=none",
                      ledger_url=ledger_url, extra=OWLS_STREAM)
    s = dataclasses.replace(s, delivery=dataclasses.replace(
        s.delivery, retry_initial=0.1, retry_max=0.2))
    async with await server.start(s) as gw:
        seed(gw.runtime, address=PERSON, **SOFT_OPT_IN)
        seed(gw.runtime, address=PERSON, org="owls", basis="consent", source="owls form")
        await send(gw, [PERSON])
        port = gw.runtime.settings.smtp.listen.port
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as c:
            await c.login("owls-appeal", "owls-pass")
            await c.sendmail("appeal@owls.test", [PERSON], message(PERSON))
        status, answer = await Admin(gw, admin_http).erase(PERSON, org="acme")
        assert status == 201 and answer["removed"]["copies"] == 1
        sink.reply = "250 OK"
        await wait_until_spool_is_empty(gw)
    delivered = sorted((sender, rcpts[0]) for sender, rcpts, _ in sink.messages)
    assert delivered == [("", "news@acme.test"), ("appeal@owls.test", PERSON)]


async def test_a_copy_in_a_spool_the_erasure_cannot_reach_is_dropped_not_delivered(
        tmp_path, sink, ledger_url):
    """`gateway erase` run while the gateway holds its spool: the copy waiting for the
    upstream (451) is decided again before its next attempt, and dropped as erased."""
    sink.replies = [DOWN, DOWN]
    settings = settings_for(tmp_path, sink, ledger_url)
    config = tmp_path / "config.toml"
    config.write_text(config_text(tmp_path, settings.smtp.listen.port, free_port(),
                                  settings.delivery.upstream, ledger_url=ledger_url))
    async with await server.start(settings) as gw:
        seed(gw.runtime, address=PERSON, **SOFT_OPT_IN)
        await send(gw, [PERSON])
        assert gw.runtime.spool.stats()["depth"] == 1
        code = await asyncio.to_thread(main, ["erase", PERSON, "--channel", "email",
                                              "--org", "acme", "--source", "phone call",
                                              "--config", str(config)])
        assert code == 0
        assert gw.runtime.spool.stats()["depth"] == 1  # the CLI could not open it
        await wait_until_spool_is_empty(gw)
        await asyncio.sleep(0.3)  # the DSN to the sender goes out too
        assert PERSON not in [r for _, rcpts, _ in sink.messages for r in rcpts]
        dsn = [d for s, rcpts, d in sink.messages if rcpts == ["news@acme.test"]]
        assert dsn and b"erased" in dsn[0]
        with gw.runtime.spool._lock:
            status, body = gw.runtime.spool.conn.execute(
                "SELECT status, length(data) FROM spool WHERE rcpt = ?", (PERSON,)).fetchone()
        assert (status, body) == ("dropped", 0)  # its body went with the attempt


def test_gateway_erase_and_audit_show_only_the_erasure(tmp_path, ledger_url, capsys):
    config = tmp_path / "config.toml"
    config.write_text(config_text(tmp_path, free_port(), free_port(), "maildir:out",
                                  ledger_url=ledger_url))
    settings = make_settings(tmp_path, ledger_url=ledger_url)
    from gateway.consent import ConsentService
    from gateway.ledger import open_ledger
    ledger = open_ledger(ledger_url, settings.gateway.data_dir)
    try:
        seed(ConsentService(settings, ledger), address=PERSON, basis="consent",
             source="form")
    finally:
        ledger.close()
    assert main(["optout", PERSON, "--org", "acme", "--channel", "email",
                 "--config", str(config)]) == 0
    args = ["erase", PERSON, "--channel", "email", "--org", "*", "--source", "letter",
            "--config", str(config)]
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "recorded" in out and "1 evidence, 1 opt outs" in out
    assert main(args + ["--json"]) == 0  # again: nothing more to do
    again = json.loads(capsys.readouterr().out)
    assert again["new"] is False and set(again["removed"].values()) == {0}
    assert main(["audit", PERSON, "--config", str(config)]) == 0
    trail = json.loads(capsys.readouterr().out)
    assert (trail["evidence"], trail["opt_outs"], trail["decisions"]) == ([], [], [])
    assert [(e["org"], e["source"]) for e in trail["erasures"]] == [("*", "letter")]
    assert main(["check", PERSON, "--org", "acme", "--config", str(config)]) == 1
    assert "erased" in capsys.readouterr().out
    assert main(["erase", PERSON, "--channel", "email", "--org", "*", "--source",
                 PERSON, "--config", str(config)]) == 2


async def test_the_ledger_and_the_spool_hold_no_trace_of_an_erased_person(
        tmp_path, sink, ledger_url, admin_http):
    sink.replies = [DOWN]
    async with await server.start(settings_for(tmp_path, sink, ledger_url)) as gw:
        api = Admin(gw, admin_http)
        for who in (PERSON, OTHER):
            seed(gw.runtime, address=who, **SOFT_OPT_IN)
            seed(gw.runtime, address=who, basis="consent", source=f"form filled by {who}")
            await send(gw, [who])
        await wait_until_spool_is_empty(gw)
        await api.post("/api/v1/optouts", {"org": "acme", "channel": "email",
                                           "address": PERSON, "source": "phoned"})
        assert (await api.erase(PERSON))[0] == 201
        with pytest.raises(aiosmtplib.SMTPResponseException):
            await send(gw, [PERSON])  # decided again after the erasure: recorded too
        assert traces_in_ledger(gw.runtime.ledger, ledger_url, "quartermain") == []
        assert traces_in_ledger(gw.runtime.ledger, ledger_url, "otto.other") != []
