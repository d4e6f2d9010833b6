"""The upstream relay misbehaves (refuses, answers 421/451/5xx, hangs after the final dot,
drops the connection): mail waits in the spool, goes out once when the upstream recovers,
and a permanent refusal comes back to the sender as a bounce."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import random
from collections import Counter
from dataclasses import dataclass, field

import aiosmtplib
import pytest
from gwtest import SOFT_OPT_IN, free_port, make_settings, seed

from gateway import server

pytestmark = pytest.mark.timeout(60)

SETTLE = 0.7  # long enough for a wrong second delivery to show up


@dataclass
class ScriptedUpstream:
    """An SMTP server whose answers follow a script.

    `greetings`: one per connection ("220 ..." or e.g. "421 ..." then close);
    `at_rcpt`: replies to RCPT, in turn; `at_data`: what happens after the final dot, in
    turn: a reply line, "hang" (never answer), "drop" (close without answering) or
    "accept-drop" (keep the message, then close before answering 250). When a script
    runs out, the answer is 250 and the message is kept."""

    port: int
    greetings: list[str] = field(default_factory=list)
    at_rcpt: list[str] = field(default_factory=list)
    at_data: list[str] = field(default_factory=list)
    accepted: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    transactions: int = 0
    server: asyncio.AbstractServer | None = None
    writers: set = field(default_factory=set)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.session, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            for w in list(self.writers):
                w.close()
            await self.server.wait_closed()
            self.server = None

    def message_ids(self) -> Counter:
        return Counter(str(email.message_from_bytes(d, policy=email.policy.compat32)
                           ["Message-ID"]) for _, _, d in self.accepted)

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.writers.add(writer)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _converse(self, reader, writer) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        greeting = self.greetings.pop(0) if self.greetings else "220 upstream ESMTP"
        say(greeting)
        if not greeting.startswith("220"):
            return
        mail_from, rcpts = "", []
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                say("250-upstream")
                say("250 8BITMIME")
            elif verb == b"MAIL":
                mail_from, rcpts = line[10:].strip().decode().strip("<>"), []
                say("250 OK")
            elif verb == b"RCPT":
                reply = self.at_rcpt.pop(0) if self.at_rcpt else "250 OK"
                if reply.startswith("250"):
                    rcpts.append(line[8:].strip().decode().strip("<>"))
                say(reply)
            elif verb == b"DATA":
                say("354 go ahead")
                data = b""
                while (chunk := await reader.readline()) != b".\r\n":
                    if not chunk:
                        return
                    data += chunk[1:] if chunk.startswith(b".") else chunk
                self.transactions += 1
                action = self.at_data.pop(0) if self.at_data else "250 OK"
                if action in ("accept-drop", "250 OK"):
                    self.accepted.append((mail_from, rcpts, data))
                if action == "hang":
                    await reader.read()  # until the gateway gives up and closes
                    return
                if action in ("drop", "accept-drop"):
                    return
                say(action)
            elif verb == b"QUIT":
                say("221 bye")
                return
            else:  # RSET, NOOP, anything else
                say("250 OK")
            await writer.drain()

    async def wait_for(self, count: int, timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.accepted) < count:
            assert loop.time() < deadline, f"upstream got {len(self.accepted)} of {count}"
            await asyncio.sleep(0.05)


@pytest.fixture
async def upstream():
    u = ScriptedUpstream(free_port())
    await u.start()
    yield u
    await u.stop()


@pytest.fixture
async def start_gateway(tmp_path, upstream):
    """`await start_gateway()`: a gateway relaying to the scripted upstream, with short
    delays (a 0.5 s delivery timeout, retries after 0.2-0.5 s) to keep the tests quick."""
    running = []

    async def start(timeout: float = 0.5):
        settings = make_settings(tmp_path,
                                 upstream=f"smtp://127.0.0.1:{upstream.port}?tls=none")
        settings = dataclasses.replace(
            settings, delivery=dataclasses.replace(settings.delivery, timeout=timeout,
                                                   retry_initial=0.2, retry_max=0.5))
        gw = await server.start(settings)
        running.append(gw)
        for i in range(40):
            seed(gw.runtime, address=f"p{i}@example.com", **SOFT_OPT_IN)
        return gw

    yield start
    for gw in running:
        await gw.stop()


def message(i: int) -> bytes:
    return (f"From: news@acme.test\r\nTo: p{i}@example.com\r\nSubject: offer {i}\r\n"
            f"Message-ID: <up-{i}@acme.test>\r\n\r\nHedge trimmers, half price.\r\n").encode()


async def send(gw, i: int) -> None:
    port = gw.runtime.settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                               timeout=10) as client:
        await client.login("acme-news", "news-pass")
        await client.sendmail("news@acme.test", [f"p{i}@example.com"], message(i))


def results(gw) -> Counter:
    return Counter(row[0] for row in gw.runtime.spool.conn.execute(
        "SELECT result FROM delivery_log").fetchall())


async def test_refused_connections_keep_mail_spooled_until_the_upstream_listens(
        start_gateway, upstream):
    await upstream.stop()
    gw = await start_gateway()
    for i in range(5):
        await send(gw, i)
    await asyncio.sleep(SETTLE)
    assert gw.runtime.spool.stats()["depth"] == 5
    assert "ConnectionRefused" in gw.runtime.health["upstream"]["error"] \
        or "connect" in gw.runtime.health["upstream"]["error"].lower()
    await upstream.start()
    await upstream.wait_for(5)
    await asyncio.sleep(SETTLE)
    assert upstream.message_ids() == Counter({f"<up-{i}@acme.test>": 1 for i in range(5)})
    assert gw.runtime.spool.stats()["depth"] == 0


@pytest.mark.parametrize("script", [
    {"greetings": ["421 4.3.2 too busy, come back later"]},
    {"at_data": ["421 4.3.2 shutting down"]},
    {"at_data": ["451 4.3.0 local problem", "451 4.3.0 still a problem"]},
    {"at_rcpt": ["450 4.2.1 mailbox busy"]},
], ids=["greeting-421", "data-421", "data-451-twice", "rcpt-450"])
async def test_temporary_refusals_are_retried_and_delivered_once(start_gateway, upstream,
                                                                  script):
    for name, replies in script.items():
        setattr(upstream, name, list(replies))
    gw = await start_gateway()
    await send(gw, 1)
    await upstream.wait_for(1, timeout=15)
    await asyncio.sleep(SETTLE)
    assert upstream.message_ids() == Counter({"<up-1@acme.test>": 1})
    log = results(gw)
    assert log["delivered"] == 1 and log["deferred"] == sum(map(len, script.values()))


async def test_an_upstream_that_never_answers_the_final_dot_times_out_and_is_retried(
        start_gateway, upstream):
    upstream.at_data = ["hang"]
    gw = await start_gateway()
    await send(gw, 1)
    # Meanwhile the gateway keeps taking mail.
    await send(gw, 2)
    await upstream.wait_for(2, timeout=15)
    await asyncio.sleep(SETTLE)
    assert upstream.message_ids() == Counter({"<up-1@acme.test>": 1, "<up-2@acme.test>": 1})
    assert results(gw)["deferred"] == 1
    assert "Timeout" in gw.runtime.health["upstream"]["error"]


async def test_a_connection_dropped_after_data_is_retried_and_delivered_once(start_gateway,
                                                                             upstream):
    upstream.at_data = ["drop"]
    gw = await start_gateway()
    await send(gw, 1)
    await upstream.wait_for(1)
    await asyncio.sleep(SETTLE)
    assert upstream.message_ids() == Counter({"<up-1@acme.test>": 1})
    assert upstream.transactions == 2


async def test_a_drop_after_the_upstream_took_the_message_is_the_at_least_once_window(
        start_gateway, upstream):
    """The upstream kept the message but the connection died before its 250 reached us:
    SMTP cannot tell this from a failure, so the copy is sent again (RFC 5321 6.1
    accepts duplicates over loss). This is the one case of a second delivery."""
    upstream.at_data = ["accept-drop"]
    gw = await start_gateway()
    await send(gw, 1)
    await upstream.wait_for(2)
    await asyncio.sleep(SETTLE)
    assert upstream.message_ids() == Counter({"<up-1@acme.test>": 2})


@pytest.mark.parametrize("script", [
    {"at_data": ["554 5.7.1 rejected by policy"]},
    {"at_rcpt": ["550 5.1.1 no such user"]},
], ids=["data-554", "rcpt-550"])
async def test_a_permanent_refusal_bounces_to_the_sender_once(start_gateway, upstream,
                                                              script):
    for name, replies in script.items():
        setattr(upstream, name, list(replies))
    gw = await start_gateway()
    await send(gw, 1)
    await upstream.wait_for(1)
    await asyncio.sleep(SETTLE)
    (mail_from, rcpts, data), = upstream.accepted
    assert mail_from == "" and rcpts == ["news@acme.test"]
    report = email.message_from_bytes(data, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert list(script.values())[0][0].split(" ", 1)[1] in data.decode("utf-8", "replace")
    log = results(gw)
    assert log["bounced"] == 1 and log["delivered"] == 1


async def test_a_stormy_upstream_loses_nothing_and_duplicates_only_the_window(start_gateway,
                                                                               upstream):
    rng = random.Random(7)
    faults = ["421 4.3.2 busy", "451 4.3.0 try again", "hang", "drop", "accept-drop"]
    upstream.at_data = [rng.choice(faults) for _ in range(25)]
    upstream.greetings = ["421 4.3.2 busy"] * 3
    windows = upstream.at_data.count("accept-drop")
    gw = await start_gateway()
    sent = await asyncio.gather(*(send(gw, i) for i in range(30)), return_exceptions=True)
    assert not [s for s in sent if isinstance(s, Exception)]
    await upstream.wait_for(30 + windows, timeout=40)
    await asyncio.sleep(SETTLE)
    ids = upstream.message_ids()
    assert set(ids) == {f"<up-{i}@acme.test>" for i in range(30)}
    assert sum(ids.values()) == 30 + windows
    assert all(n <= 1 + windows for n in ids.values())
    assert gw.runtime.spool.stats()["depth"] == 0
