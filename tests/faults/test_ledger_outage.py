"""The PostgreSQL ledger goes away (contract: "Ledger unreachable"): nothing is accepted
without a decision (SMTP 451 4.3.0, APIs 503, /healthz 503 naming the ledger), opt-outs
from people are answered as usual and kept in data_dir, and once the server is back they
are in the ledger and everything works again, without a restart."""

from __future__ import annotations

import asyncio
import json
import re
import textwrap
from collections import Counter

import aiohttp
import aiosmtplib
import pytest
from gwtest import BASE_TOML, SOFT_OPT_IN, Sink, free_port, seed
from twilio.request_validator import RequestValidator

from gateway import config, server

pytestmark = pytest.mark.slow
TWILIO_TOKEN = "twilio-auth-token"
ADMIN = {"Authorization": "Bearer test-admin-token"}
NUMBER = "+447400123000"
PASSWORD = "pw-never-shown"


@pytest.fixture(scope="module")
def own_cluster():
    """A cluster of this module's own: these tests stop and start it."""
    import pgcluster

    if pgcluster.server_bindir() is None:
        pytest.skip("PostgreSQL is not installed")
    cluster = pgcluster.start_cluster(free_port())
    yield cluster
    pgcluster.remove_cluster(cluster)


@pytest.fixture
async def gw(tmp_path, own_cluster):
    sink = Sink(free_port())
    await sink.start()
    http_port = free_port()
    text = textwrap.dedent(BASE_TOML.format(
        data_dir=tmp_path / "data", mode="enforce", gateway_extra="", smtp_port=free_port(),
        smtp_extra="", http_port=http_port, secret='"s"', reply_handling="rewrite",
        upstream=f"smtp://127.0.0.1:{sink.port}?tls=none", max_age="5d", dkim="",
        org_name="Acme Garden Ltd"))
    # With a password in the URL (trust authentication ignores it): it must never show.
    ledger_url = own_cluster.new_database().replace("gateway@", f"gateway:{PASSWORD}@")
    text += (f'\n[sms.twilio]\naccount_sid = "AC1"\nauth_token = "{TWILIO_TOKEN}"\n'
             f'\n[ledger]\nurl = "{ledger_url}"\n')
    settings = config.parse(text, None, tmp_path)
    running = await server.start(settings)
    running.sink = sink
    running.cluster = own_cluster
    try:
        yield running
    finally:
        await running.stop()
        await sink.stop()
        own_cluster.start() if not _up(own_cluster) else None


def _up(cluster) -> bool:
    return cluster.run("pg_ctl", "-D", str(cluster.datadir), "status", check=False
                       ).returncode == 0


def url(gw, path: str) -> str:
    return f"{gw.runtime.settings.http.public_url}{path}"


async def send(gw, rcpt: str, mid: str, stream=("acme-fixed", "fixed-pass")) -> int:
    """The SMTP answer to one message: 250, or the code it was refused with."""
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", timeout=10, start_tls=False,
                                   port=gw.runtime.settings.smtp.listen.port) as client:
            await client.login(*stream)
            await client.sendmail("news@acme.test", [rcpt],
                                  f"Subject: s\r\nMessage-ID: {mid}\r\n\r\nDecking.\r\n".encode())
    except aiosmtplib.SMTPRecipientsRefused as exc:
        return exc.recipients[0].code
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code
    return 250


async def stop_text(http, gw, sender: str, sid: str) -> tuple[int, str]:
    form = {"MessageSid": sid, "AccountSid": "AC1", "From": sender, "To": NUMBER,
            "Body": "STOP", "NumMedia": "0"}
    signed = RequestValidator(TWILIO_TOKEN).compute_signature(url(gw, "/sms/inbound/twilio"),
                                                              form)
    async with http.post(url(gw, "/sms/inbound/twilio"), data=form,
                         headers={"X-Twilio-Signature": signed}) as resp:
        return resp.status, await resp.text()


async def until(check, timeout: float = 15.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result or loop.time() > deadline:
            return result
        await asyncio.sleep(0.2)


async def test_while_the_ledger_is_down_nothing_is_accepted_and_opt_outs_are_kept(gw, caplog):
    rt = gw.runtime
    for who in ("jane@example.com", "tom@example.com"):
        seed(rt, address=who, **SOFT_OPT_IN)
    assert await send(gw, "jane@example.com", "<before@acme.test>") == 250
    copy = (await gw.sink.wait_for(1))[0][2].decode()
    token = re.search(r"/u/([a-z0-9]+)", copy).group(1)

    gw.cluster.stop("immediate")
    async with aiohttp.ClientSession() as http:
        assert await send(gw, "tom@example.com", "<during@acme.test>") == 451
        async with http.get(url(gw, "/healthz")) as resp:
            assert resp.status == 503 and "ledger" in (await resp.json())["failing"]
        async with http.post(url(gw, "/api/v1/consents"), headers=ADMIN, json={
                "org": "acme", "channel": "email", "address": "amy@example.com",
                "basis": "consent", "obtained_at": "2026-01-10T10:00:00Z",
                "source": "form"}) as resp:
            assert resp.status == 503
        async with http.post(url(gw, "/api/v1/sms"), headers={
                "Authorization": "Bearer sk_news"}, json={"to": "+447400123456",
                                                          "body": "Offers"}) as resp:
            assert resp.status == 503
        # People's opt-outs are answered as usual.
        async with http.post(url(gw, f"/u/{token}"),
                             data={"List-Unsubscribe": "One-Click"}) as resp:
            assert resp.status == 200
        status, reply = await stop_text(http, gw, "+447400123456", "SMoutage1")
        assert status == 200 and "unsubscribed" in reply.lower()

        gw.cluster.start()  # no restart of the gateway

        async def recovered():
            async with http.get(url(gw, "/healthz")) as resp:
                return resp.status == 200 and not rt.optouts.pending.count
        assert await until(recovered)
        async with http.get(url(gw, "/status.json"), headers=ADMIN) as resp:
            status = await resp.text()
        async with http.get(url(gw, "/status"), headers=ADMIN) as resp:
            status += await resp.text()
    assert PASSWORD not in status and PASSWORD not in caplog.text
    assert "ledger at postgresql://gateway:***@" in caplog.text  # what the log says instead
    assert [o["method"] for o in rt.ledger.opt_out_rows("jane@example.com")] == ["one-click"]
    assert [o["method"] for o in rt.ledger.opt_out_rows("+447400123456")] == ["sms-keyword"]
    assert await send(gw, "jane@example.com", "<after-1@acme.test>") == 550
    assert await send(gw, "tom@example.com", "<after-2@acme.test>") == 250


async def test_while_the_ledger_is_down_the_status_page_says_so_and_shows_the_spool(gw):
    gw.cluster.stop("immediate")
    ops = {"Authorization": aiohttp.encode_basic_auth("ops", "test-admin-token")}
    async with aiohttp.ClientSession(headers=ops) as http:
        async with http.get(url(gw, "/status")) as resp:
            page = await resp.text()
            assert resp.status == 503 and resp.content_type == "text/html"
        async with http.get(url(gw, "/status.json")) as resp:
            data = await resp.json()
            assert resp.status == 503
    assert "The ledger cannot be reached" in page and 'id="spool-depth">0<' in page
    assert data["error"] == "ledger_unavailable" and data["failing"] == ["ledger"]
    assert data["spool"]["depth"] == 0 and PASSWORD not in page + json.dumps(data)


async def test_a_burst_through_an_immediate_stop_and_start_loses_and_doubles_nothing(gw):
    rt = gw.runtime
    people = [f"p{i}@example.com" for i in range(20)]
    for who in people:
        seed(rt, address=who, **SOFT_OPT_IN)
    accepted: list[str] = []
    stops_answered: list[str] = []
    texts_sent: list[str] = []
    for n in range(20):
        seed(rt, channel="sms", address=f"+4474001235{n:02d}", **SOFT_OPT_IN)

    async def mail(k: int) -> None:
        for n in range(15):
            mid = f"<burst-{k}-{n}@acme.test>"
            if await send(gw, people[(k * 15 + n) % len(people)], mid) == 250:
                accepted.append(mid)
            await asyncio.sleep(0.02)

    async def stops(http) -> None:
        for n in range(20):
            status, _ = await stop_text(http, gw, f"+4474001234{n:02d}", f"SMburst{n}")
            if status == 200:
                stops_answered.append(f"SMburst{n}")
            await asyncio.sleep(0.03)

    async def texts(http) -> None:
        for n in range(20):
            async with http.post(url(gw, "/api/v1/sms"), json={
                    "to": f"+4474001235{n:02d}", "body": "Decking offer"},
                    headers={"Authorization": "Bearer sk_news"}) as resp:
                if resp.status == 202:
                    texts_sent.append(f"+4474001235{n:02d}")
            await asyncio.sleep(0.03)

    async def outage() -> None:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(gw.cluster.stop, "immediate")
        await asyncio.sleep(1.0)
        await asyncio.to_thread(gw.cluster.start)

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(mail(k) for k in range(3)), stops(http), texts(http),
                             outage())

        async def settled():
            return not rt.optouts.pending.count and not rt.spool.stats()["depth"]
        assert await until(settled, 30), (rt.optouts.pending.count, rt.spool.stats())
    decided = {d["message_id"] for who in people for d in rt.ledger.decisions_for(who)
               if d["allowed"]}
    assert set(accepted) <= decided  # no 250 without a recorded decision
    received = Counter(m[2].split(b"Message-ID: ")[1].split(b"\r\n")[0].decode()
                       for m in gw.sink.messages)
    assert all(received[mid] == 1 for mid in accepted)  # each delivered once
    assert len(accepted) < 45  # the outage refused some (451)
    recorded = {o["message_id"] for n in range(20)
                for o in rt.ledger.opt_out_rows(f"+4474001234{n:02d}")}
    assert set(stops_answered) <= recorded  # every STOP answered is in the ledger
    assert len(stops_answered) == 20  # and every one was answered
    decided_texts = {n for n in texts_sent if any(d["allowed"] for d in rt.ledger.decisions_for(n))}
    assert texts_sent and decided_texts == set(texts_sent)  # no text sent undecided
