"""Several gateways on one PostgreSQL ledger (contract: "Shared ledger"): each with its own
ports and data_dir, they agree on every token and opt-out and show each other on /status."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import time

import aiohttp
import aiosmtplib
import pytest
from gwprocess import ADMIN, GatewayProcess, seed

from gateway.ledger import open_ledger
from gateway.ledger.migrate import migrations

pytestmark = pytest.mark.slow
PEOPLE = ["jane@example.com", "tom@example.com"]


@pytest.fixture
def pair(tmp_path, pg_cluster):
    """Two `gateway run` processes sharing one empty PostgreSQL ledger, started together
    (the first start of both creates the schema once)."""
    url = pg_cluster.new_database()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    gateways = [GatewayProcess(tmp_path / name, f"maildir:{tmp_path / name / 'outbox'}",
                               ledger_url=url) for name in ("a", "b")]
    for gw in gateways:
        gw.launch()
    try:
        for gw in gateways:
            gw.wait_listening()
        seed(gateways[0].data_dir, emails=PEOPLE, ledger_url=url)
        yield url, gateways
    finally:
        for gw in gateways:
            gw.terminate()


async def send(gw: GatewayProcess, rcpt: str, n: int) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.smtp_port, start_tls=False,
                               timeout=10) as client:
        await client.login("acme-fixed", "fixed-pass")
        await client.sendmail("news@acme.test", [rcpt], (
            f"Subject: offer {n}\r\nMessage-ID: <two-{n}@acme.test>\r\n\r\nDecking.\r\n"
        ).encode())


def delivered(gw: GatewayProcess, timeout: float = 10.0) -> list[email.message.EmailMessage]:
    deadline = time.monotonic() + timeout
    while True:
        files = sorted((gw.tmp_path / "outbox" / "new").glob("*")) if \
            (gw.tmp_path / "outbox" / "new").exists() else []
        if files or time.monotonic() > deadline:
            return [email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
                    for f in files]
        time.sleep(0.05)


async def blocked_within(gw: GatewayProcess, rcpt: str, seconds: float) -> float:
    """How long until `gw` refuses marketing to `rcpt`. Fails when a message sent (begun)
    `seconds` or more after the start is still allowed: a slow round trip of the test's
    own is no failure of the gateway's."""
    started = time.monotonic()
    n = 100
    while True:
        n += 1
        sent_at = time.monotonic() - started
        try:
            await send(gw, rcpt, n)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            assert "opted_out" in str(exc)
            return sent_at
        assert sent_at < seconds, f"still allowed {sent_at:.2f} s after the opt-out"
        await asyncio.sleep(0.1)


async def test_a_token_minted_by_one_gateway_unsubscribes_on_the_other(pair):
    _, (a, b) = pair
    await send(a, PEOPLE[0], 1)
    [copy] = delivered(a)
    url = re.findall(r"<(http[^>]+/u/[^>]+)>", copy["List-Unsubscribe"])[0]
    token = url.rsplit("/", 1)[1]

    async with aiohttp.ClientSession() as http, http.post(
            f"{b.url}/u/{token}", data={"List-Unsubscribe": "One-Click"}) as resp:
        assert resp.status == 200

    assert await blocked_within(a, PEOPLE[0], 1.0) < 1.0


async def test_an_opt_out_through_one_gateway_blocks_on_the_other_within_a_second(pair):
    _, (a, b) = pair
    await send(a, PEOPLE[1], 2)  # allowed before

    async with aiohttp.ClientSession() as http, http.post(
            f"{b.url}/api/v1/optouts", headers=ADMIN,
            json={"org": "acme", "channel": "email", "address": PEOPLE[1],
                  "source": "phoned"}) as resp:
        assert resp.status == 201

    assert await blocked_within(a, PEOPLE[1], 1.0) < 1.0


async def test_status_on_one_gateway_shows_the_others_decisions_and_both_gateways(pair):
    url, (a, b) = pair
    await send(a, PEOPLE[0], 3)
    await send(a, PEOPLE[1], 4)

    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 15
        while True:  # each announces itself within a heartbeat of starting
            async with http.get(f"{b.url}/status.json", headers=ADMIN) as resp:
                assert resp.status == 200
                data = await resp.json()
            if len(data["gateways"]) == 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        async with http.get(f"{b.url}/status", headers=ADMIN) as resp:
            page = await resp.text()

    assert data["decisions"]["last_hour"]["total"] >= 2  # a's, seen from b
    listens = {g["smtp_listen"] for g in data["gateways"]}
    assert listens == {f"127.0.0.1:{a.smtp_port}", f"127.0.0.1:{b.smtp_port}"}
    assert {g["state"] for g in data["gateways"]} == {"running"}
    assert str(a.data_dir) in page and str(b.data_dir) in page
    ledger = open_ledger(url, a.data_dir)
    try:  # both started on the empty database at once: the schema was made once
        assert [r[0] for r in ledger._tuples(
            "SELECT version FROM schema_migrations ORDER BY 1")] == [
                m.version for m in migrations()]
    finally:
        ledger.close()
