"""Soak: N minutes of mixed mail and texts through a real gateway, with opt-outs arriving
through the API at the same time, and the upstream down (451) for part of the run so that
mail waits in the spool. Not part of the test suite.

    python bench/soak.py --minutes 10 [--upstream-down 0.33]

Starts `gateway run` on free loopback ports with a fresh data directory, an SMTP sink
as upstream and the outbox SMS provider, seeds consent for a population of addresses and
numbers, then runs SMTP clients, API text senders and an opt-out feeder concurrently.
The sink answers `451 4.3.0` at DATA during the first `--upstream-down` of each window
of the run (windows of 30 s, shorter for short runs), so copies are retried from the
spool (the config makes retries come round within seconds).
Every `--sample` seconds it prints throughput, latency and the gateway's memory (PSS of
all its processes). At the end it waits for the spool to drain, stops the gateway with
SIGTERM (exit 0 expected), and checks:

- every accepted message delivered, unless every one of its copies was dropped at the
  decision before delivery because its recipient had opted out meanwhile (spool status
  'dropped', a blocked decision in the ledger, one DSN to the sender for each);
  no copy delivered twice;
- the invariant: no copy was delivered to anyone whose opt-out was recorded before the
  copy's last decision. The gateway decides each copy again just before each attempt and
  records only blocks, so the reference for a delivered copy is the time the sink saw the
  MAIL FROM of the transaction that delivered it (the latest the decision can have been
  made): ledger optouts.at < that time is a violation, except opt-outs recorded less than
  50 ms before it, reported apart as "in flight" (recorded while that attempt may already
  have been decided: the soak cannot see the decision's own time). Texts (never spooled)
  against their decision: optouts.at < decisions.at.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import aiosmtplib
from aiosmtpd.smtp import SMTP as SinkSMTP

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402 - bench/ helpers, beside this script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.evidence import parse_evidence  # noqa: E402
from gateway.ledger import Ledger  # noqa: E402

# Retries come round within seconds, so the spool drains soon after the upstream is back.
RETRY_INITIAL_S, RETRY_MAX_S = 1, 5
SENDER = "news@acme.test"  # the envelope sender: what arrives for it is a DSN
# An opt-out recorded this shortly before the MAIL FROM of the transaction that delivered
# a copy may have been committed after that attempt's decision read the ledger.
IN_FLIGHT_S = 0.05

CONFIG = """
[gateway]
data_dir = "{data}"

[smtp]
listen = "127.0.0.1:{smtp_port}"
hostname = "soak.test"
max_recipients = 50

[http]
listen = "127.0.0.1:{http_port}"
public_url = "http://127.0.0.1:{http_port}"
admin_token = "soak-admin"

[unsubscribe]
secret = "soak-secret"
mailto_domain = "unsub.soak.test"

[delivery]
upstream = "smtp://127.0.0.1:{sink_port}?tls=none"
retry_initial = "{retry_initial}s"
retry_max = "{retry_max}s"
workers = 4

[sms]
provider = "outbox"
outbox = "{data}/sms-outbox.jsonl"

[[org]]
id = "acme"
name = "Acme Garden Ltd"

[[stream]]
id = "acme-news"
org = "acme"
purpose = "marketing"
category = "garden-tools"
smtp_username = "acme-news"
smtp_password = "soak-pass"
api_key = "sk_soak"
sms_from = ["+447400123000"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    """Resident memory of the gateway: `gateway run` and its worker processes, each
    page shared among them counted once (PSS)."""
    return common.pss_kb(pid)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Stats:
    mail_accepted: int = 0
    mail_copies: int = 0
    texts_sent: int = 0
    opt_outs: int = 0
    refused: Counter = field(default_factory=Counter)
    smtp_latency: list[float] = field(default_factory=list)
    sms_latency: list[float] = field(default_factory=list)
    sms_ids: dict[str, str] = field(default_factory=dict)  # provider id -> gateway id
    accepted_ids: set[str] = field(default_factory=set)
    # (channel, address) -> when the API answered 201 to each opt-out (time.time())
    opt_out_answers: dict[tuple[str, str], list[float]] = field(default_factory=dict)


class Outage:
    """When the upstream is down: the first `fraction` of each `period` seconds of the run
    (from `begin()` to `end()`; up before and after)."""

    def __init__(self, fraction: float, run_seconds: float):
        self.fraction = fraction
        # 30 s windows; a short run gets at least four, so a 1-minute run has outages too.
        self.period = max(2.0, min(30.0, run_seconds / 4))
        self.started: float | None = None  # monotonic
        self.ended: float | None = None

    def begin(self) -> None:
        self.started = time.monotonic()

    def end(self) -> None:
        self.ended = time.monotonic()

    def down(self) -> bool:
        if self.started is None or self.ended is not None or self.fraction <= 0:
            return False
        return (time.monotonic() - self.started) % self.period < self.fraction * self.period

    def windows(self) -> list[tuple[float, float]]:
        """The down windows, in seconds from the start of the run."""
        if self.started is None or self.fraction <= 0:
            return []
        length = (self.ended or time.monotonic()) - self.started
        starts = [i * self.period for i in range(int(length // self.period) + 1)]
        return [(a, min(a + self.fraction * self.period, length)) for a in starts
                if length - a > 0.1]


@dataclass(frozen=True)
class Received:
    """One copy at the upstream: its Message-ID and recipient, and the time (time.time())
    the MAIL FROM of the transaction that delivered it arrived. For a DSN, the Message-ID
    it answers (In-Reply-To) and the recipient it reports (Final-Recipient)."""

    mid: str
    rcpt: str
    mail_at: float
    dsn_for: tuple[str, str] | None = None


def _header(head: bytes, name: bytes) -> str:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(name + b":"):
            return line.split(b":", 1)[1].strip().decode("ascii", "replace")
    return ""


class Sink:
    """The upstream, on a thread of its own (its clock readings don't wait behind the load
    generators' event loop). Remembers each copy (`Received`) and answers 451 at DATA
    while the outage says it is down."""

    def __init__(self, outage: Outage) -> None:
        self.port = free_port()
        self.outage = outage
        self.received: list[Received] = []  # appended by the sink's thread only
        self.refused = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: asyncio.AbstractServer | None = None
        self.thread: threading.Thread | None = None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.mail_at = time.time()  # a new envelope for each transaction
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.outage.down():
            self.refused += 1
            return "451 4.3.0 upstream unavailable (soak outage)"
        content = envelope.original_content
        head = content.split(b"\r\n\r\n", 1)[0]
        mid = _header(head, b"message-id")
        for rcpt in envelope.rcpt_tos:
            dsn_for = None
            if rcpt == SENDER:
                reported = re.search(rb"Final-Recipient: *rfc822; *(\S+)", content)
                dsn_for = (_header(head, b"in-reply-to"),
                           reported.group(1).decode("ascii", "replace") if reported else "")
            self.received.append(Received(mid, rcpt, envelope.mail_at, dsn_for))
        return "250 OK"

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            self.loop = asyncio.new_event_loop()
            self.server = self.loop.run_until_complete(self.loop.create_server(
                lambda: SinkSMTP(self, decode_data=False, hostname="sink", loop=self.loop),
                "127.0.0.1", self.port))
            ready.set()
            self.loop.run_forever()
            self.server.close()  # the gateway, stopped first, has closed its connections
            self.loop.close()

        self.thread = threading.Thread(target=serve, name="sink", daemon=True)
        self.thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(10)


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args = args
        self.work = work
        self.data = work / "data"
        self.smtp_port, self.http_port = free_port(), free_port()
        self.emails = [f"p{i}@example.com" for i in range(args.people)]
        self.phones = [f"+4474009{i:05d}" for i in range(args.people // 2)]
        self.stats = Stats()
        self.stop = asyncio.Event()
        self.rng = random.Random(args.seed)
        self.proc: subprocess.Popen | None = None
        self.outage = Outage(args.upstream_down, args.minutes * 60)

    # -- setup -------------------------------------------------------------------------

    def seed(self) -> None:
        ledger = Ledger(self.data)
        regions = {"acme": "GB"}
        records = [parse_evidence({"org": "acme", "channel": ch, "address": a,
                                   "basis": "consent", "obtained_at": "2026-01-01T00:00:00Z",
                                   "source": "soak"}, regions)
                   for ch, addresses in (("email", self.emails), ("sms", self.phones))
                   for a in addresses]
        ledger.record_evidence_many(records)
        ledger.close()

    def start_gateway(self, sink_port: int) -> None:
        config = self.work / "config.toml"
        config.write_text(CONFIG.format(data=self.data, smtp_port=self.smtp_port,
                                        http_port=self.http_port, sink_port=sink_port,
                                        retry_initial=RETRY_INITIAL_S,
                                        retry_max=RETRY_MAX_S))
        with open(self.work / "gateway.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run",
                                          "--config", str(config)], stdout=log, stderr=log,
                                         cwd=self.work)
        deadline = time.monotonic() + 30
        for port in (self.smtp_port, self.http_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the gateway did not start; see gateway.log") from None
                    time.sleep(0.05)

    # -- load ----------------------------------------------------------------------------

    async def smtp_client(self, n: int) -> None:
        while not self.stop.is_set():
            try:
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=self.smtp_port,
                                           start_tls=False, timeout=60) as client:
                    await client.login("acme-news", "soak-pass")
                    for _ in range(200):  # then reconnect: connection churn too
                        if self.stop.is_set():
                            return
                        await self.one_message(client, n)
            except (aiosmtplib.SMTPException, OSError) as exc:
                self.stats.refused[f"smtp {type(exc).__name__}"] += 1
                await asyncio.sleep(0.1)

    async def one_message(self, client: aiosmtplib.SMTP, n: int) -> None:
        rcpts = self.rng.sample(self.emails, 3 if self.rng.random() < 0.2 else 1)
        mid = f"<soak-{n}-{time.monotonic_ns()}@acme.test>"
        body = "Hedge trimmers, half price this week.\r\n" * self.rng.randint(1, 40)
        data = (f"From: Acme News <{SENDER}>\r\nTo: {', '.join(rcpts)}\r\n"
                f"Subject: Offer\r\nMessage-ID: {mid}\r\nMIME-Version: 1.0\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()
        started = time.monotonic()
        try:
            _, reply = await client.sendmail(SENDER, rcpts, data)
        except aiosmtplib.SMTPResponseException as exc:
            self.stats.refused[f"smtp {exc.code}"] += 1
            return
        finally:
            self.stats.smtp_latency.append(time.monotonic() - started)
        self.stats.mail_accepted += 1
        copies = re.search(r"queued (\d+) cop", reply)  # some recipients may be blocked
        self.stats.mail_copies += int(copies.group(1)) if copies else len(rcpts)
        self.stats.accepted_ids.add(mid)

    async def sms_client(self, http: aiohttp.ClientSession) -> None:
        url = f"http://127.0.0.1:{self.http_port}/api/v1/sms"
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                async with http.post(url, json={"to": self.rng.choice(self.phones),
                                                "body": "Garden sale this weekend"},
                                     headers={"Authorization": "Bearer sk_soak"}) as resp:
                    answer = await resp.json()
                    if resp.status == 202:
                        self.stats.texts_sent += 1
                        self.stats.sms_ids[answer["message_id"]] = answer["gateway_message_id"]
                    else:
                        self.stats.refused[f"sms {resp.status} {answer.get('reason', '')}"] += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.stats.refused[f"sms {type(exc).__name__}"] += 1
            finally:
                self.stats.sms_latency.append(time.monotonic() - started)

    async def opt_out_feeder(self, http: aiohttp.ClientSession) -> None:
        url = f"http://127.0.0.1:{self.http_port}/api/v1/optouts"
        while not self.stop.is_set():
            sms = self.rng.random() < 0.4
            address = self.rng.choice(self.phones if sms else self.emails)
            channel = "sms" if sms else "email"
            try:
                async with http.post(url, json={"org": "acme", "address": address,
                                                "channel": channel, "source": "soak"},
                                     headers={"Authorization": "Bearer soak-admin"}) as resp:
                    if resp.status == 201:
                        self.stats.opt_outs += 1
                        self.stats.opt_out_answers.setdefault((channel, address),
                                                              []).append(time.time())
                    else:
                        self.stats.refused[f"optout {resp.status}"] += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.stats.refused[f"optout {type(exc).__name__}"] += 1
            await asyncio.sleep(1 / self.args.opt_outs_per_second)

    # -- reporting -----------------------------------------------------------------------

    async def sampler(self, started: float, samples: list[tuple], sink: Sink) -> None:
        last = (started, 0, 0, 0)
        print(f"{'t (s)':>6} {'mail/s':>7} {'texts/s':>8} {'smtp p99':>9} {'sms p99':>8} "
              f"{'opt-outs':>8} {'PSS MiB':>8} {'copies out/s':>12} {'spooled':>8} upstream",
              flush=True)
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.args.sample)
            now = time.monotonic()
            s = self.stats
            window = max(1e-9, now - last[0])
            rss = rss_kib(self.proc.pid) / 1024
            smtp_p99 = percentile(s.smtp_latency[-2000:], 0.99) * 1000
            sms_p99 = percentile(s.sms_latency[-2000:], 0.99) * 1000
            queued = await asyncio.to_thread(self.spooled)
            out = len(sink.received)
            samples.append((now - started, rss))
            print(f"{now - started:6.0f} {(s.mail_accepted - last[1]) / window:7.1f} "
                  f"{(s.texts_sent - last[2]) / window:8.1f} {smtp_p99:7.0f}ms "
                  f"{sms_p99:6.0f}ms {s.opt_outs:8d} {rss:8.1f} "
                  f"{(out - last[3]) / window:12.1f} {queued:8d} "
                  f"{'451' if self.outage.down() else 'up'}", flush=True)
            last = (now, s.mail_accepted, s.texts_sent, out)

    def spool_copies(self) -> list[sqlite3.Row]:
        """The copies (not DSNs) in every worker's spool (one spool*.db per worker)."""
        rows = []
        for path in sorted(self.data.glob("spool*.db")):
            conn = sqlite3.connect(path)
            conn.row_factory = sqlite3.Row
            try:
                rows += conn.execute("SELECT message_id, rcpt, status, last_error, "
                                     "finished_at FROM spool WHERE kind = 'copy'").fetchall()
            finally:
                conn.close()
        return rows

    def spooled(self) -> int:
        """Copies (and DSNs) still queued in the spools."""
        depth = 0
        for path in self.data.glob("spool*.db"):
            conn = sqlite3.connect(path)
            try:
                depth += conn.execute("SELECT COUNT(*) FROM spool WHERE status = 'queued'"
                                      ).fetchone()[0]
            finally:
                conn.close()
        return depth

    async def run(self) -> int:
        sink = Sink(self.outage)
        sink.start()
        try:
            self.seed()
            await asyncio.to_thread(self.start_gateway, sink.port)
            samples: list[tuple] = []
            started = time.monotonic()
            self.outage.begin()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
                tasks = [asyncio.create_task(self.smtp_client(i))
                         for i in range(self.args.smtp)]
                tasks += [asyncio.create_task(self.sms_client(http))
                          for _ in range(self.args.sms)]
                tasks.append(asyncio.create_task(self.opt_out_feeder(http)))
                sampler = asyncio.create_task(self.sampler(started, samples, sink))
                await asyncio.sleep(self.args.minutes * 60)
                self.stop.set()
                self.outage.end()  # the upstream is back for the drain
                await asyncio.gather(*tasks, sampler)
            elapsed = time.monotonic() - started
            drain_started = time.monotonic()
            drained = await self.wait_for_delivery()
            drain = time.monotonic() - drain_started
            self.proc.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(self.proc.wait, 60)
        finally:
            sink.stop()
        return self.report(elapsed, samples, sink, drained, drain, status)

    async def wait_for_delivery(self) -> bool:
        """Until nothing is queued, however long the backlog takes while it shrinks; False
        once it has not shrunk for a minute and a few retry rounds."""
        stall = 60 + 6 * RETRY_MAX_S
        least, since = None, time.monotonic()
        while time.monotonic() - since < stall:
            depth = await asyncio.to_thread(self.spooled)
            if depth == 0:
                return True
            if least is None or depth < least:
                least, since = depth, time.monotonic()
            await asyncio.sleep(0.5)
        return False

    def report(self, elapsed: float, samples: list[tuple], sink: Sink, drained: bool,
               drain: float, status: int) -> int:
        s = self.stats
        print("\n== soak summary ==")
        print(f"duration {elapsed:.0f} s; SMTP clients {self.args.smtp}, SMS clients "
              f"{self.args.sms}, opt-outs {self.args.opt_outs_per_second}/s")
        windows = self.outage.windows()
        down = sum(b - a for a, b in windows)
        print(f"upstream down (451 4.3.0 at DATA): {down:.0f} s of {elapsed:.0f} s "
              f"({down / elapsed:.0%})"
              + (f" in {len(windows)} windows, one every {self.outage.period:.0f} s "
                 f"({', '.join(f'{a:.0f}-{b:.0f}' for a, b in windows)} s)" if windows else "")
              + f"; {sink.refused} DATA answered 451; retries every {RETRY_INITIAL_S}"
              f"-{RETRY_MAX_S} s")
        print(f"mail: {s.mail_accepted} messages accepted ({s.mail_accepted / elapsed:.1f}/s), "
              f"{s.mail_copies} copies; SMTP transaction p50 "
              f"{percentile(s.smtp_latency, 0.5) * 1000:.0f} ms, p99 "
              f"{percentile(s.smtp_latency, 0.99) * 1000:.0f} ms")
        print(f"texts: {s.texts_sent} sent ({s.texts_sent / elapsed:.1f}/s); POST p50 "
              f"{percentile(s.sms_latency, 0.5) * 1000:.0f} ms, p99 "
              f"{percentile(s.sms_latency, 0.99) * 1000:.0f} ms")
        print(f"opt-outs recorded: {s.opt_outs}; refusals: {dict(s.refused.most_common())}")
        # The gateway's caches (people's records, kept decisions: bounded) fill during the
        # first minutes; a leak goes on growing after them. So the middle fifth of the run
        # is compared with the last, by their medians: a leak moves the level, while one
        # sample taken in a burst (a copy's bytes in flight) moves only a maximum.
        first = max([rss for t, rss in samples if t <= elapsed * 0.2] or [samples[0][1]])
        warm = [rss for t, rss in samples if elapsed * 0.4 <= t <= elapsed * 0.6] or \
            [samples[len(samples) // 2][1]]
        late = [rss for t, rss in samples if t >= elapsed * 0.8] or [samples[-1][1]]
        level = statistics.median(warm)
        growth = statistics.median(late) - level
        print(f"memory (PSS, all processes): first 20 % max {first:.1f} MiB; middle 20 % "
              f"median {level:.1f} (max {max(warm):.1f}) MiB; last 20 % median "
              f"{statistics.median(late):.1f} (max {max(late):.1f}) MiB; growth since the "
              f"middle {growth:+.1f} MiB "
              f"({'no growth beyond warm-up' if growth <= 0.1 * level else 'GROWING'})")
        print(f"SIGTERM: exit status {status}; spool drained after the load: {drained} "
              f"(in {drain:.1f} s)")
        problems = self.check_delivery(sink) + self.check_invariant(sink)
        for problem in problems[:20]:
            print("PROBLEM:", problem)
        ok = status == 0 and drained and not problems and growth <= 0.1 * level
        print("RESULT:", "OK" if ok else "PROBLEMS")
        return 0 if ok else 1

    def check_delivery(self, sink: Sink) -> list[str]:
        """Everything accepted delivered or dropped for an opt-out, nothing twice, one DSN
        to the sender for each copy dropped."""
        problems = []
        received = Counter((r.mid, r.rcpt) for r in sink.received)
        duplicates = sum(n - 1 for n in received.values() if n > 1)
        copies = self.spool_copies()
        dropped = {(c["message_id"], c["rcpt"]): c for c in copies if _blocked(c)}
        ends = Counter(c["status"] if c["status"] != "dropped" or _blocked(c)
                       else "dropped otherwise" for c in copies)
        by_message: dict[str, list[sqlite3.Row]] = {}
        for c in copies:
            by_message.setdefault(c["message_id"], []).append(c)
        delivered_ids = {r.mid for r in sink.received if r.rcpt != SENDER}
        lost = self.stats.accepted_ids - delivered_ids
        all_dropped = {mid for mid in lost
                       if by_message.get(mid) and all(_blocked(c) for c in by_message[mid])}
        print(f"delivery: {sum(received.values())} copies at the upstream "
              f"({sum(n for (_, rcpt), n in received.items() if rcpt == SENDER)} of them DSNs "
              f"to {SENDER}); spooled copies by outcome {dict(ends.most_common())}; "
              f"{len(lost)} accepted messages with no copy delivered, {len(all_dropped)} of "
              f"them with every copy dropped for an opt-out; {duplicates} duplicate copies")
        if lost - all_dropped:
            problems.append(f"{len(lost - all_dropped)} accepted messages never delivered "
                            f"(not all copies dropped for an opt-out), e.g. "
                            f"{sorted(lost - all_dropped)[:3]}")
        if duplicates:
            problems.append(f"{duplicates} copies delivered twice (no crash: a bug)")
        if ends.keys() - {"delivered", "dropped"}:
            problems.append(f"spooled copies neither delivered nor dropped for an opt-out: "
                            f"{dict(ends)}")
        marked = {(c["message_id"], c["rcpt"]) for c in copies if c["status"] == "delivered"}
        arrived = {key for key in received if key[1] != SENDER}
        if marked - arrived:
            problems.append(f"{len(marked - arrived)} copies marked delivered never arrived, "
                            f"e.g. {sorted(marked - arrived)[:3]}")
        if arrived - marked:
            problems.append(f"{len(arrived - marked)} copies arrived but are not marked "
                            f"delivered, e.g. {sorted(arrived - marked)[:3]}")
        ledger = sqlite3.connect(self.data / "ledger.db")
        try:
            blocked = {(mid, address): reason for mid, address, reason in ledger.execute(
                "SELECT message_id, address, reason FROM decisions WHERE channel = 'email' "
                "AND allowed = 0 AND message_id IS NOT NULL")}
            optouts = self.opt_outs(ledger)
        finally:
            ledger.close()
        problems += self.check_drops(dropped, blocked, optouts)
        # One DSN for each copy dropped before delivery; a message to several people, some
        # of them blocked when it was accepted, also brings one for those (never spooled).
        dsns = Counter(r.dsn_for for r in sink.received if r.rcpt == SENDER)
        answered = {key for key in dsns if key in dropped}
        spooled = {(c["message_id"], c["rcpt"]) for c in copies}
        at_acceptance = {key for key in dsns.keys() - answered
                         if (key[0], key[1].lower()) in blocked and key not in spooled}
        print(f"dropped before delivery (decided again, recipient opted out while the copy "
              f"waited): {len(dropped)} copies; DSNs to {SENDER}: {sum(dsns.values())} "
              f"arrived, {len(answered)} for the dropped copies and {len(at_acceptance)} for "
              f"recipients blocked when their message was accepted")
        if set(dropped) - answered:
            problems.append(f"{len(set(dropped) - answered)} dropped copies without a DSN, "
                            f"e.g. {sorted(set(dropped) - answered)[:3]}")
        if dsns.keys() - answered - at_acceptance:
            strays = dsns.keys() - answered - at_acceptance
            problems.append(f"{sum(dsns[k] for k in strays)} DSNs for no dropped or blocked "
                            f"copy, e.g. {sorted(strays)[:3]}")
        if any(n > 1 for n in dsns.values()):
            problems.append(f"{sum(n - 1 for n in dsns.values() if n > 1)} DSNs repeated")
        return problems

    @staticmethod
    def check_drops(dropped: dict[tuple[str, str], sqlite3.Row],
                    blocked: dict[tuple[str, str], str],
                    optouts: dict[tuple[str, str], list[tuple[float, str]]]) -> list[str]:
        """Each copy dropped at the decision before delivery has its blocked decision in the
        ledger (its message id, reason opted_out), and its recipient had opted out before."""
        unrecorded = [key for key in dropped if blocked.get((key[0], key[1].lower()))
                      != "opted_out"]
        unjustified = [key for key, c in dropped.items()
                       if not any(at < c["finished_at"]
                                  for at, _ in optouts.get(("email", key[1].lower()), []))]
        problems = []
        if unrecorded:
            problems.append(f"{len(unrecorded)} dropped copies without a blocked opted_out "
                            f"decision for their message id, e.g. {unrecorded[:3]}")
        if unjustified:
            problems.append(f"{len(unjustified)} copies dropped whose recipient had not "
                            f"opted out, e.g. {unjustified[:3]}")
        return problems

    @staticmethod
    def opt_outs(ledger: sqlite3.Connection) -> dict[tuple[str, str], list[tuple[float, str]]]:
        """(channel, address) -> [(time, ISO time)] of each opt-out from acme (or all)."""
        optouts: dict[tuple[str, str], list[tuple[float, str]]] = {}
        for address, channel, at in ledger.execute(
                "SELECT address, channel, at FROM optouts "
                "WHERE kind = 'optout' AND org IN ('acme', '*')"):
            for one in (("email", "sms") if channel == "all" else (channel,)):
                optouts.setdefault((one, address), []).append((_seconds(at), at))
        return optouts

    def check_invariant(self, sink: Sink) -> list[str]:
        """Nobody opted out before a copy's last decision got it; each delivered copy and
        text has an allowing decision."""
        problems: list[str] = []
        ledger = sqlite3.connect(self.data / "ledger.db")
        try:
            optouts = self.opt_outs(ledger)
            allowed_mail = {(mid, address) for mid, address in ledger.execute(
                "SELECT message_id, address FROM decisions WHERE channel = 'email' "
                "AND allowed = 1")}
            sms_decisions = {mid: (address, at) for mid, address, at in ledger.execute(
                "SELECT message_id, address, at FROM decisions WHERE channel = 'sms' "
                "AND allowed = 1")}
        finally:
            ledger.close()
        # (channel, address, id, reference time, earliest opt-out before it (time, ISO))
        late: list[tuple[str, str, str, float, tuple[float, str]]] = []
        mail_checked = 0
        for r in sink.received:
            if r.rcpt == SENDER:
                continue  # a DSN back to the sender
            address = r.rcpt.lower()
            if (r.mid, address) not in allowed_mail:
                problems.append(f"a copy to {r.rcpt} ({r.mid}) has no allowing decision")
                continue
            mail_checked += 1
            earlier = [o for o in optouts.get(("email", address), []) if o[0] < r.mail_at]
            if earlier:
                late.append(("email", address, r.mid, r.mail_at, min(earlier)))
        texts_checked = 0
        outbox = self.data / "sms-outbox.jsonl"
        for line in outbox.read_text("utf-8").splitlines() if outbox.exists() else []:
            text = json.loads(line)
            gateway_id = self.stats.sms_ids.get(text["message_id"])
            if gateway_id is None:
                continue  # an opt-out confirmation or a text whose answer we did not see
            address, at = sms_decisions.get(gateway_id, (text["to"], None))
            if at is None:
                problems.append(f"a text to {text['to']} has no allowing decision")
                continue
            texts_checked += 1
            earlier = [o for o in optouts.get(("sms", address), []) if o[0] < _seconds(at)]
            if earlier:
                late.append(("sms", address, gateway_id, _seconds(at), min(earlier)))
        violations = [v for v in late if v[0] == "sms" or v[3] - v[4][0] >= IN_FLIGHT_S]
        in_flight = [v for v in late if v not in violations]
        for kind, found in (("VIOLATION", violations), ("IN FLIGHT", in_flight)):
            for channel, address, mid, ref, (opted, opted_iso) in found[:20]:
                answers = [t for t in self.stats.opt_out_answers.get((channel, address), [])
                           if t >= opted]
                answered = (f"; its API answer came {(ref - min(answers)) * 1000:.1f} ms "
                            f"before" if answers else "")
                print(f"  {kind} {channel} {address} {mid}: "
                      f"{'MAIL FROM at the sink' if channel == 'email' else 'decision'} "
                      f"{_iso(ref)}, opt-out recorded {opted_iso} "
                      f"({(ref - opted) * 1000:.1f} ms earlier{answered})")
        mail_late = sum(v[0] == "email" for v in violations)
        print(f"invariant, mail: {mail_checked} delivered copies checked against the time the "
              f"sink saw the MAIL FROM that delivered each (the gateway decides again before "
              f"it): {mail_late} delivered after an earlier opt-out; {len(in_flight)} more "
              f"with the opt-out recorded < {IN_FLIGHT_S * 1000:.0f} ms before that MAIL FROM, "
              f"counted as in flight and not as violations (it may have been committed after "
              f"the attempt's decision read the ledger: the soak cannot see when that "
              f"decision was made, so this is an allowance, not a proof)")
        print(f"invariant, texts: {texts_checked} texts checked against their decision: "
              f"{len(violations) - mail_late} sent after an earlier opt-out "
              f"({len(optouts)} opted-out addresses and numbers in all)")
        if violations:
            problems.append(f"{len(violations)} deliveries after an earlier opt-out")
        return problems


def _blocked(copy: sqlite3.Row) -> bool:
    """A spooled copy dropped by the decision made again before an attempt."""
    return (copy["status"] == "dropped"
            and (copy["last_error"] or "").startswith("blocked before delivery"))


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--smtp", type=int, default=4, help="concurrent SMTP clients")
    parser.add_argument("--sms", type=int, default=3, help="concurrent API text senders")
    parser.add_argument("--opt-outs-per-second", type=float, default=2.0)
    parser.add_argument("--people", type=int, default=4000, help="addresses (half as many "
                                                                "phone numbers)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between lines")
    parser.add_argument("--upstream-down", type=float, default=0.33,
                        help="fraction of each window of the run during which the upstream "
                             "answers 451 at DATA (0: never)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if not 0 <= args.upstream_down < 1:
        parser.error("--upstream-down is a fraction: 0 (never) up to, not including, 1")
    work = Path(tempfile.mkdtemp(prefix="gateway-soak-", dir=os.environ.get("TMPDIR")))
    print(f"work directory {work}")
    soak = Soak(args, work)
    try:
        return asyncio.run(soak.run())
    finally:
        if soak.proc and soak.proc.poll() is None:
            soak.proc.kill()
        if not args.keep:
            import shutil
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
