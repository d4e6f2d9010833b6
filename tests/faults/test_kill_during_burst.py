"""kill -9 in the middle of a burst of mail, texts and opt-outs: whatever was acknowledged
(250, 202, 201) survives the crash, and mail goes out once (see the at-least-once note)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import aiosmtplib
import pytest
from gwprocess import ADMIN, SMS_KEY, GatewayProcess, seed, send_numbered
from gwtest import Sink, free_port

from gateway.ledger import Ledger

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

MESSAGES = 200
TEXTS = 200
OPT_OUTS = 60
CONNECTIONS = 8


@dataclass
class TimedSink(Sink):
    """The upstream, remembering when each message arrived."""

    arrived: list = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        if len(self.arrived) < len(self.messages):
            self.arrived.append(time.monotonic())
        return reply

    def message_ids(self) -> list[tuple[str, float]]:
        pairs = zip(self.messages, self.arrived, strict=True)
        return [(message_id(data), at) for (_, _, data), at in pairs]


def message_id(data: bytes) -> str:
    return str(email.message_from_bytes(data, policy=email.policy.compat32)["Message-ID"])


@dataclass
class Acknowledged:
    mail: list[str] = field(default_factory=list)  # Message-IDs answered 250
    texts: list[str] = field(default_factory=list)  # provider message ids answered 202
    opt_outs: list[int] = field(default_factory=list)  # ledger ids answered 201
    errors: Counter = field(default_factory=Counter)


async def smtp_burst(gw: GatewayProcess, ack: Acknowledged, first: int, count: int) -> None:
    try:
        await send_numbered(gw.smtp_port, first, count, "burst", ack.mail)
    except (aiosmtplib.SMTPException, OSError) as exc:
        ack.errors[f"smtp {type(exc).__name__}"] += 1


async def sms_burst(gw: GatewayProcess, http: aiohttp.ClientSession, ack: Acknowledged,
                    numbers: list[str]) -> None:
    for number in numbers:
        try:
            async with http.post(f"{gw.url}/api/v1/sms", headers=SMS_KEY,
                                 json={"to": number, "body": f"offer for {number}"}) as resp:
                if resp.status == 202:
                    ack.texts.append((await resp.json())["message_id"])
                else:
                    ack.errors[f"sms {resp.status}"] += 1
        except (TimeoutError, aiohttp.ClientError) as exc:
            ack.errors[f"sms {type(exc).__name__}"] += 1
            return


async def opt_out_burst(gw: GatewayProcess, http: aiohttp.ClientSession, ack: Acknowledged,
                        first: int, count: int) -> None:
    for i in range(first, first + count):
        try:
            async with http.post(f"{gw.url}/api/v1/optouts", headers=ADMIN,
                                 json={"org": "acme", "channel": "email", "source": "burst",
                                       "address": f"leaver{i}@example.com"}) as resp:
                if resp.status == 201:
                    ack.opt_outs.append((await resp.json())["id"])
                else:
                    ack.errors[f"optout {resp.status}"] += 1
            await asyncio.sleep(0.02)  # spread over the burst
        except (TimeoutError, aiohttp.ClientError) as exc:
            ack.errors[f"optout {type(exc).__name__}"] += 1
            return


def outbox_ids(gw: GatewayProcess) -> tuple[Counter, int]:
    """Provider message ids in the outbox, and the number of unreadable lines."""
    ids, torn = Counter(), 0
    if gw.outbox.exists():
        for line in gw.outbox.read_text("utf-8").splitlines():
            try:
                ids[json.loads(line)["message_id"]] += 1
            except (ValueError, KeyError):
                torn += 1
    return ids, torn


def maildir_ids(root) -> list[tuple[str, float]]:
    new = root / "new"
    return [(message_id(p.read_bytes()), p.stat().st_mtime) for p in sorted(new.iterdir())] \
        if new.exists() else []


# processes = 2: `gateway run` is a supervisor whose workers die with it.
@pytest.mark.parametrize(("upstream", "processes"), [("smtp", 1), ("maildir", 1), ("smtp", 2)])
async def test_kill_9_mid_burst_loses_nothing_acknowledged(tmp_path, upstream, processes):
    sink = TimedSink(free_port())
    await sink.start()
    numbers = [f"+4474009{i:05d}" for i in range(TEXTS)]
    maildir = tmp_path / "outbox"
    url = f"smtp://127.0.0.1:{sink.port}?tls=none" if upstream == "smtp" else f"maildir:{maildir}"
    gw = GatewayProcess(tmp_path, url, over={"gateway_extra": f"processes = {processes}"})
    delivered = sink.message_ids if upstream == "smtp" else (lambda: maildir_ids(maildir))
    seed(gw.data_dir, emails=[f"r{i}@example.com" for i in range(MESSAGES)], phones=numbers)
    await asyncio.to_thread(gw.start)
    ack = Acknowledged()
    per = MESSAGES // CONNECTIONS
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            load = [asyncio.create_task(smtp_burst(gw, ack, c * per, per))
                    for c in range(CONNECTIONS)]
            load += [asyncio.create_task(sms_burst(gw, http, ack, numbers[c::4]))
                     for c in range(4)]
            load += [asyncio.create_task(opt_out_burst(gw, http, ack, c * 30, 30))
                     for c in range(OPT_OUTS // 30)]
            deadline = time.monotonic() + 30
            # Kill once a good part of each kind has been acknowledged, mid-flight.
            while (len(ack.mail) < MESSAGES // 3 or len(ack.texts) < TEXTS // 3
                   or len(ack.opt_outs) < OPT_OUTS // 3) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            gw.kill()
            killed_at = time.monotonic()
            await asyncio.gather(*load)
        assert ack.mail and ack.texts and ack.opt_outs, "the burst never got going"
        assert len(ack.mail) < MESSAGES, "the kill came after the whole burst"
        acked_mail, acked_texts = list(ack.mail), list(ack.texts)

        restarted_at = time.monotonic()  # delivery resumes before the listeners open
        await asyncio.to_thread(gw.start)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 40
        while not set(acked_mail) <= {m for m, _ in delivered()}:
            assert loop.time() < deadline, "accepted mail not delivered after the restart"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # time for any duplicate to show up
        assert await asyncio.to_thread(gw.terminate) == 0
    finally:
        gw.kill()
        await sink.stop()

    received = delivered()
    counts = Counter(m for m, _ in received)
    duplicates = {m: n for m, n in counts.items() if n > 1}
    # At-least-once window: the upstream got the copy, the gateway died before it could
    # mark it delivered. Such a copy was first received before the restart (sent by the
    # killed process; the sink may read it just after the kill), then again after it;
    # at most one per delivery worker (2 in each process) can be in that window.
    for m in duplicates:
        times = [at for mid, at in received if mid == m]
        assert duplicates[m] == 2 and times[0] < restarted_at <= times[1], \
            f"{m} delivered {duplicates[m]} times outside the crash window: " \
            f"{[round(t - killed_at, 3) for t in times]} after the kill, restart " \
            f"{round(restarted_at - killed_at, 3)}"
    assert len(duplicates) <= 2 * processes, \
        f"{len(duplicates)} duplicates: more than the delivery workers"
    # A maildir redelivery rewrites the same file name: no window at all.
    assert upstream == "smtp" or not duplicates
    print(f"\nkill -9 burst ({upstream}, {processes} processes): {len(acked_mail)} mail acked, "
          f"{len(acked_texts)} texts, {len(ack.opt_outs)} opt-outs; {len(received)} delivered, duplicates "
          f"{sorted(duplicates)}; client errors {dict(ack.errors)}")

    texts, torn = outbox_ids(gw)
    assert torn == 0, "a torn line in the SMS outbox"
    missing = [t for t in acked_texts if texts[t] != 1]
    assert not missing, f"texts answered 202 but not in the outbox exactly once: {missing}"

    ledger = Ledger(gw.data_dir)
    try:
        stored = {r["id"] for r in ledger.iter_all("optouts")}
    finally:
        ledger.close()
    assert set(ack.opt_outs) <= stored, "an opt-out answered 201 was lost"
