"""Soak: N minutes of mixed mail and texts through a real gateway, with opt-outs arriving
through the API at the same time. Not part of the test suite.

    python bench/soak.py --minutes 10

Starts `gateway run` on free loopback ports with a fresh data directory, an SMTP sink
as upstream and the outbox SMS provider, seeds consent for a population of addresses and
numbers, then runs SMTP clients, API text senders and an opt-out feeder concurrently.
Every `--sample` seconds it prints throughput, latency and the gateway's memory (PSS of
all its processes). At the end it stops the gateway with SIGTERM (exit 0 expected),
checks that everything accepted was delivered, and checks the invariant:

    no message was delivered to anyone whose opt-out was recorded before the message's
    decision (ledger optouts.at < decisions.at, for the delivered copy or text).
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
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
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
retry_initial = "1s"
retry_max = "5s"
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


class Sink:
    """The upstream: counts copies and remembers (Message-ID, rcpt) of each."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[str, str]] = []
        self.server: asyncio.AbstractServer | None = None

    async def handle_DATA(self, server, session, envelope):
        head = envelope.original_content.split(b"\r\n\r\n", 1)[0]
        mid = next((line.split(b":", 1)[1].strip().decode("ascii", "replace")
                    for line in head.split(b"\r\n") if line.lower().startswith(b"message-id:")),
                   "")
        for rcpt in envelope.rcpt_tos:
            self.received.append((mid, rcpt))
        return "250 OK"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SinkSMTP(self, decode_data=False, hostname="sink", loop=loop),
            "127.0.0.1", self.port)


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
                                        http_port=self.http_port, sink_port=sink_port))
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
        data = (f"From: Acme News <news@acme.test>\r\nTo: {', '.join(rcpts)}\r\n"
                f"Subject: Offer\r\nMessage-ID: {mid}\r\nMIME-Version: 1.0\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()
        started = time.monotonic()
        try:
            _, reply = await client.sendmail("news@acme.test", rcpts, data)
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
            try:
                async with http.post(url, json={"org": "acme", "address": address,
                                                "channel": "sms" if sms else "email",
                                                "source": "soak"},
                                     headers={"Authorization": "Bearer soak-admin"}) as resp:
                    if resp.status == 201:
                        self.stats.opt_outs += 1
                    else:
                        self.stats.refused[f"optout {resp.status}"] += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.stats.refused[f"optout {type(exc).__name__}"] += 1
            await asyncio.sleep(1 / self.args.opt_outs_per_second)

    # -- reporting -----------------------------------------------------------------------

    async def sampler(self, started: float, samples: list[tuple]) -> None:
        last = (started, 0, 0)
        print(f"{'t (s)':>6} {'mail/s':>7} {'texts/s':>8} {'smtp p99':>9} {'sms p99':>8} "
              f"{'opt-outs':>8} {'PSS MiB':>8}", flush=True)
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.args.sample)
            now = time.monotonic()
            s = self.stats
            window = max(1e-9, now - last[0])
            rss = rss_kib(self.proc.pid) / 1024
            smtp_p99 = percentile(s.smtp_latency[-2000:], 0.99) * 1000
            sms_p99 = percentile(s.sms_latency[-2000:], 0.99) * 1000
            samples.append((now - started, rss))
            print(f"{now - started:6.0f} {(s.mail_accepted - last[1]) / window:7.1f} "
                  f"{(s.texts_sent - last[2]) / window:8.1f} {smtp_p99:7.0f}ms "
                  f"{sms_p99:6.0f}ms {s.opt_outs:8d} {rss:8.1f}", flush=True)
            last = (now, s.mail_accepted, s.texts_sent)

    async def run(self) -> int:
        sink = Sink()
        await sink.start()
        self.seed()
        await asyncio.to_thread(self.start_gateway, sink.port)
        samples: list[tuple] = []
        started = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            tasks = [asyncio.create_task(self.smtp_client(i)) for i in range(self.args.smtp)]
            tasks += [asyncio.create_task(self.sms_client(http)) for _ in range(self.args.sms)]
            tasks.append(asyncio.create_task(self.opt_out_feeder(http)))
            sampler = asyncio.create_task(self.sampler(started, samples))
            await asyncio.sleep(self.args.minutes * 60)
            self.stop.set()
            await asyncio.gather(*tasks, sampler)
        elapsed = time.monotonic() - started
        drained = await self.wait_for_delivery(sink)
        self.proc.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(self.proc.wait, 60)
        sink.server.close()
        return self.report(elapsed, samples, sink, drained, status)

    async def wait_for_delivery(self, sink: Sink, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            depth = 0
            for path in self.data.glob("spool*.db"):  # one per worker process
                conn = sqlite3.connect(path)
                try:
                    depth += conn.execute("SELECT COUNT(*) FROM spool WHERE status = 'queued'"
                                          ).fetchone()[0]
                finally:
                    conn.close()
            if depth == 0:
                return True
            await asyncio.sleep(0.5)
        return False

    def report(self, elapsed: float, samples: list[tuple], sink: Sink, drained: bool,
               status: int) -> int:
        s = self.stats
        print("\n== soak summary ==")
        print(f"duration {elapsed:.0f} s; SMTP clients {self.args.smtp}, SMS clients "
              f"{self.args.sms}, opt-outs {self.args.opt_outs_per_second}/s")
        print(f"mail: {s.mail_accepted} messages accepted ({s.mail_accepted / elapsed:.1f}/s), "
              f"{s.mail_copies} copies; SMTP transaction p50 "
              f"{percentile(s.smtp_latency, 0.5) * 1000:.0f} ms, p99 "
              f"{percentile(s.smtp_latency, 0.99) * 1000:.0f} ms")
        print(f"texts: {s.texts_sent} sent ({s.texts_sent / elapsed:.1f}/s); POST p50 "
              f"{percentile(s.sms_latency, 0.5) * 1000:.0f} ms, p99 "
              f"{percentile(s.sms_latency, 0.99) * 1000:.0f} ms")
        print(f"opt-outs recorded: {s.opt_outs}; refusals: {dict(s.refused.most_common())}")
        warm = [rss for t, rss in samples if t <= elapsed * 0.2] or [samples[0][1]]
        late = [rss for t, rss in samples if t >= elapsed * 0.8] or [samples[-1][1]]
        growth = max(late) - max(warm)
        print(f"memory (PSS, all processes): after warm-up (first 20 %) max "
              f"{max(warm):.1f} MiB, last 20 % max {max(late):.1f} MiB, growth {growth:+.1f} MiB "
              f"({'no growth beyond warm-up' if growth <= 0.1 * max(warm) else 'GROWING'})")
        print(f"SIGTERM: exit status {status}; spool drained before stop: {drained}")
        problems = self.check(sink)
        for problem in problems[:20]:
            print("PROBLEM:", problem)
        ok = status == 0 and drained and not problems and growth <= 0.1 * max(warm)
        print("RESULT:", "OK" if ok else "PROBLEMS")
        return 0 if ok else 1

    def check(self, sink: Sink) -> list[str]:
        """Everything accepted delivered; nobody opted out before the decision got mail."""
        problems = []
        received = Counter(sink.received)
        delivered_ids = {mid for mid, _ in received}
        lost = self.stats.accepted_ids - delivered_ids
        duplicates = sum(n - 1 for n in received.values() if n > 1)
        print(f"delivery: {len(received)} copies at the upstream, {len(lost)} accepted "
              f"messages missing, {duplicates} duplicate copies")
        if lost:
            problems.append(f"{len(lost)} accepted messages never delivered")
        if duplicates:
            problems.append(f"{duplicates} copies delivered twice (no crash: a bug)")
        ledger = sqlite3.connect(self.data / "ledger.db")
        ledger.row_factory = sqlite3.Row
        optouts: dict[tuple[str, str], list[str]] = {}
        for r in ledger.execute("SELECT address, channel, at FROM optouts "
                                "WHERE kind = 'optout' AND org IN ('acme', '*')"):
            for channel in (("email", "sms") if r["channel"] == "all" else (r["channel"],)):
                optouts.setdefault((channel, r["address"]), []).append(r["at"])
        violations, checked, close = [], 0, 0
        email_decisions = {(r["message_id"], r["address"]): r["at"] for r in ledger.execute(
            "SELECT message_id, address, at FROM decisions WHERE channel = 'email' "
            "AND allowed = 1")}
        for (mid, rcpt) in received:
            if rcpt == "news@acme.test":
                continue  # a delivery status notification back to the sender
            at = email_decisions.get((mid, rcpt.lower()))
            if at is None:
                problems.append(f"a copy to {rcpt} ({mid}) has no allowing decision")
                continue
            checked += 1
            earlier = [o for o in optouts.get(("email", rcpt.lower()), []) if o < at]
            if earlier:
                violations.append(("email", rcpt, mid, at, max(earlier)))
        sms_decisions = {r["message_id"]: (r["address"], r["at"]) for r in ledger.execute(
            "SELECT message_id, address, at FROM decisions WHERE channel = 'sms' "
            "AND allowed = 1")}
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
            checked += 1
            earlier = [o for o in optouts.get(("sms", address), []) if o < at]
            if earlier:
                violations.append(("sms", address, gateway_id, at, max(earlier)))
        ledger.close()
        for channel, address, mid, at, opted in violations:
            gap = _seconds(at) - _seconds(opted)
            close += gap < 0.05
            print(f"  VIOLATION {channel} {address} {mid}: decision {at}, opt-out {opted} "
                  f"({gap * 1000:.1f} ms earlier)")
        print(f"invariant: {checked} deliveries checked against {len(optouts)} opted-out "
              f"addresses: {len(violations)} delivered after an earlier opt-out"
              + (f" ({close} within 50 ms of the decision record)" if violations else ""))
        if violations:
            problems.append(f"{len(violations)} deliveries after an earlier opt-out")
        return problems


def _seconds(iso: str) -> float:
    from datetime import datetime
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
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
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
