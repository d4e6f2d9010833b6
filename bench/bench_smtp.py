#!/usr/bin/env python3
"""SMTP benchmark: the consent gateway against a bare aiosmtpd -> aiosmtplib passthrough.

Processes (each in its own interpreter, so none shares an event loop with another):

    load generator (this process, aiosmtplib clients, AUTH)
        |-- (a) bare relay: aiosmtpd; handle_DATA forwards with a pooled aiosmtplib
        |       connection, then answers 250
        '-- (b) `gateway run`: decide, rewrite per recipient, spool (fsync), 250; delivery
                workers then send from the spool
    both deliver to the same aiosmtpd sink (counts what it receives).

Throughput test: --messages 8 KB multipart/alternative marketing messages, one recipient
each, from --concurrency clients. Every recipient holds soft opt-in evidence, so the
gateway allows each message as marketing and rewrites it (List-Unsubscribe, footer in
both parts, Reply-To). Reported: messages accepted (250) per second, end-to-end
messages per second until the sink has them all, client-observed p50/p99 latency, CPU
time per message, and the ratio gateway/bare. Afterwards the gateway's spool and ledger
are read to check every message was spooled, delivered and had its decision recorded.

Memory test: --mem-messages concurrent messages of --mem-size (a multipart/mixed with the
8 KB alternative part and a base64 attachment) through each; peak RSS (VmHWM, reset just
before) of the front process.

Usage:  /work/venv/bin/python bench/bench_smtp.py [--messages 3000] [--concurrency 20]
        [--rounds 3] [--skip-memory] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import random
import sqlite3
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

USER, PASSWORD = "acme-news", "bench-pass"
SENDER = "news@acme.test"
RCPT_DOMAIN = "example.com"


# --------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------

def _filler(words: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    vocab = [
        "garden", "hedge", "trimmer", "lawnmower", "spring", "offer", "decking", "fencing", "compost",
        "seed", "shears", "rake", "spade", "border", "bloom", "sale", "price", "delivery", "free",
        "weekend", "catalogue", "planter", "trellis", "greenhouse", "mulch"]
    lines, line = [], []
    for _ in range(words):
        line.append(rnd.choice(vocab))
        if sum(len(w) + 1 for w in line) > 66:
            lines.append(" ".join(line))
            line = []
    if line:
        lines.append(" ".join(line))
    return lines


def alternative_part(size: int) -> bytes:
    """A multipart/alternative body part (headers + body) of about `size` bytes."""
    half = max(200, size // 2 - 200)
    text_lines, out = [], 0
    for ln in _filler(10 ** 6, 1):
        if out > half:
            break
        text_lines.append(ln)
        out += len(ln) + 2
    html_lines, out = ["<html><head><title>Spring offers</title></head><body>"], 60
    for ln in _filler(10 ** 6, 2):
        if out > half - 20:
            break
        html_lines.append(f"<p>{ln}</p>")
        out += len(ln) + 9
    html_lines.append("</body></html>")
    boundary = "=_alt_bench_0123456789"
    return ("Content-Type: multipart/alternative; boundary=\"" + boundary + "\"\r\n\r\n"
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 7bit\r\n\r\n" + "\r\n".join(text_lines) + "\r\n"
            f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 7bit\r\n\r\n" + "\r\n".join(html_lines) + "\r\n"
            f"--{boundary}--\r\n").encode()


HEAD = ("From: Acme News <news@acme.test>\r\nTo: <{to}>\r\nSubject: Spring offers\r\n"
        "Date: Sun, 29 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{mid}@acme.test>\r\n"
        "MIME-Version: 1.0\r\n")


def template_8k(size: int) -> bytes:
    """The whole message with {to} and {mid} placeholders, about `size` bytes."""
    body = alternative_part(size - len(HEAD) - 40)
    return HEAD.encode() + body


def template_big(size: int) -> bytes:
    """multipart/mixed: the alternative part plus a base64 attachment; `size` bytes."""
    alt = alternative_part(8192)
    boundary = "=_mixed_bench_0123456789"
    head = HEAD.encode() + f"Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n" \
        .encode()
    att_head = (f"--{boundary}\r\nContent-Type: application/pdf; name=\"catalogue.pdf\"\r\n"
                "Content-Disposition: attachment; filename=\"catalogue.pdf\"\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    room = size - len(head) - len(alt) - len(att_head) - len(tail) - 20
    raw_len = max(1, room * 57 // 78)
    encoded = base64.encodebytes(os.urandom(raw_len)).replace(b"\n", b"\r\n")
    return head + f"--{boundary}\r\n".encode() + alt + att_head + encoded + tail


def render(template: bytes, i: int, to: str) -> bytes:
    return template.replace(b"{to}", to.encode()).replace(b"{mid}", f"bench-{i}-{time.time_ns()}"
                                                           .encode())


def recipient(i: int, pool: int) -> str:
    return f"rcpt{i % pool}@{RCPT_DOMAIN}"


# --------------------------------------------------------------------------------------
# Subprocess roles: sink and bare relay
# --------------------------------------------------------------------------------------

def role_sink(port: int, control_port: int) -> None:
    from aiosmtpd.smtp import SMTP

    logging.getLogger("mail.log").setLevel(logging.ERROR)

    class Handler:
        count = 0
        rewritten = 0
        octets = 0

        async def handle_DATA(self, server, session, envelope):
            data = envelope.original_content or b""
            self.count += len(envelope.rcpt_tos)
            self.octets += len(data)
            head = data[:data.find(b"\r\n\r\n")]
            if b"\nList-Unsubscribe:" in head:
                self.rewritten += 1
            return "250 2.0.0 OK"

    handler = Handler()

    async def control(reader, writer):
        cmd = (await reader.readline()).strip()
        if cmd == b"reset":
            handler.count = handler.rewritten = handler.octets = 0
        writer.write(f"{handler.count} {handler.rewritten} {handler.octets}\n".encode())
        await writer.drain()
        writer.close()

    async def main():
        loop = asyncio.get_running_loop()
        await loop.create_server(lambda: SMTP(handler, decode_data=False, hostname="sink",
                                              enable_SMTPUTF8=True,
                                              data_size_limit=64 * 2 ** 20),
                                 "127.0.0.1", port)
        await asyncio.start_server(control, "127.0.0.1", control_port)
        print(f"sink listening on {port}, control {control_port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def role_relay(port: int, sink_port: int, pool_size: int, processes: int = 1) -> None:
    """The bare passthrough: AUTH, then handle_DATA forwards with a pooled connection.
    With `processes` > 1, that many copies of it share the port (SO_REUSEPORT)."""
    for _ in range(processes - 1):
        if os.fork() == 0:
            break
    import aiosmtplib
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    logging.getLogger("mail.log").setLevel(logging.ERROR)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() \
            and auth_data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)

    class Handler:
        def __init__(self):
            self.idle: list[aiosmtplib.SMTP] = []
            self.slots = asyncio.Semaphore(pool_size)

        async def _connect(self) -> aiosmtplib.SMTP:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink_port, start_tls=False,
                                     use_tls=False, timeout=120, local_hostname="bare")
            await client.connect()
            return client

        async def handle_DATA(self, server, session, envelope):
            async with self.slots:
                client = self.idle.pop() if self.idle else None
                try:
                    if client is None or not client.is_connected:
                        client = await self._connect()
                    await client.sendmail(envelope.mail_from, envelope.rcpt_tos,
                                          envelope.original_content)
                except (aiosmtplib.SMTPException, OSError) as exc:
                    if client is not None:
                        client.close()
                    return f"451 4.3.0 upstream failed: {exc}"[:200]
                self.idle.append(client)
            return "250 2.0.0 OK"

    handler = Handler()

    async def main():
        loop = asyncio.get_running_loop()
        await loop.create_server(
            lambda: SMTP(handler, decode_data=False, hostname="bare", enable_SMTPUTF8=True,
                         data_size_limit=32 * 2 ** 20, authenticator=authenticator,
                         auth_require_tls=False),
            "127.0.0.1", port, reuse_port=True)
        print(f"bare relay listening on {port} -> sink {sink_port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# --------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------

GATEWAY_TOML = """
[gateway]
data_dir = "{data_dir}"
mode = "enforce"
processes = {processes}

[smtp]
listen = "127.0.0.1:{smtp_port}"
hostname = "gw.bench.test"
max_message_size = {max_size}

[http]
listen = "127.0.0.1:{http_port}"
public_url = "https://gw.bench.test"
admin_token = "bench-admin-token"

[unsubscribe]
secret = "bench-secret"
mailto_domain = "unsub.gw.bench.test"
reply_handling = "rewrite"

[delivery]
upstream = "smtp://127.0.0.1:{sink_port}?tls=none"
workers = {workers}

[sms]
outbox = "{data_dir}/sms.jsonl"

[[org]]
id = "acme"
name = "Acme Garden Ltd"
type = "commercial"
similar = [["lawnmowers", "hedge-trimmers", "garden-tools"], ["decking", "fencing"]]

[[stream]]
id = "acme-news"
org = "acme"
purpose = "marketing"
nature = "commercial"
category = "garden-tools"
smtp_username = "{user}"
smtp_password = "{password}"
api_key = "sk_bench"
sms_from = ["+447400123000"]
allow_headers = {allow_headers}
"""


def seed_recipients(data_dir: Path, pool: int) -> None:
    """Soft opt-in evidence for every recipient (in the gateway's own ledger)."""
    from gateway.evidence import parse_evidence
    from gateway.ledger import Ledger

    ledger = Ledger(data_dir)
    try:
        records = [parse_evidence({
            "org": "acme", "channel": "email", "address": recipient(i, pool),
            "basis": "soft_opt_in", "context": "sale", "categories": ["lawnmowers"],
            "opt_out_offered": True, "obtained_at": "2026-01-10T10:00:00Z",
            "source": "checkout, opt-out box shown"}, {"acme": "GB"}) for i in range(pool)]
        ledger.record_evidence_many(records, via="bench")
    finally:
        ledger.close()


class SinkControl:
    def __init__(self, port: int):
        self.port = port

    async def query(self, cmd: str = "count") -> tuple[int, int, int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(cmd.encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
        writer.close()
        count, rewritten, octets = (int(x) for x in line.split())
        return count, rewritten, octets


@dataclass
class PhaseResult:
    target: str
    sent: int
    ok: int
    errors: dict
    accept_seconds: float
    e2e_seconds: float | None
    latencies: list[float]
    sink_count: int
    sink_rewritten: int
    cpu: dict = field(default_factory=dict)
    retried: dict = field(default_factory=dict)

    @property
    def accept_rate(self) -> float:
        return self.ok / self.accept_seconds if self.accept_seconds else 0.0

    @property
    def e2e_rate(self) -> float | None:
        return self.ok / self.e2e_seconds if self.e2e_seconds else None


async def run_load(port: int, sink: SinkControl, target: str, messages: int,
                   concurrency: int, template: bytes, rcpt_pool: int, offset: int,
                   pids: dict[str, int], e2e_timeout: float,
                   per_connection: int = 0, rcpts: int = 1) -> PhaseResult:
    """`concurrency` authenticated clients send `messages` in all; the clock starts once
    every client is connected and logged in. A client opens a new connection (with AUTH)
    after `per_connection` messages (0: never), and after a 421 or a dropped connection,
    sending that message again once. Latency is that of the message's transaction
    (MAIL ... end of DATA) alone; connecting counts in the throughput only. Each message
    goes to `rcpts` recipients; end to end means the sink has every copy."""
    import aiosmtplib

    await sink.query("reset")
    next_index = iter(range(messages))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    retried: dict[str, int] = {}  # answered 421 or dropped, sent again on a new connection
    ready = asyncio.Barrier(concurrency + 1)
    last_ok = [0.0]

    async def connect() -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                                 use_tls=False, timeout=300, local_hostname="bench-client")
        await client.connect()
        await client.login(USER, PASSWORD)
        return client

    async def quit_(client: aiosmtplib.SMTP) -> None:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    async def client_task() -> None:
        client = await connect()
        sent_here = 0
        await ready.wait()
        for i in next_index:
            n = offset + i
            to = [recipient(n * rcpts + k, rcpt_pool) for k in range(rcpts)]
            data = render(template, n, to[0])
            if per_connection and sent_here >= per_connection:  # as mailers do: reconnect
                await quit_(client)
                client, sent_here = await connect(), 0
            for attempt in (1, 2):
                started = time.perf_counter()
                try:
                    if not client.is_connected:
                        client, sent_here = await connect(), 0
                        started = time.perf_counter()
                    await client.sendmail(SENDER, to, data)
                except (aiosmtplib.SMTPException, OSError) as exc:
                    client.close()
                    transient = "421" in str(exc) or isinstance(
                        exc, aiosmtplib.SMTPServerDisconnected)
                    key = f"{type(exc).__name__}: {str(exc)[:70]}"
                    if transient and attempt == 1:  # 421 / dropped: reconnect, send again
                        retried[key] = retried.get(key, 0) + 1
                        continue
                    errors[key] = errors.get(key, 0) + 1
                    break
                now = time.perf_counter()
                latencies.append(now - started)
                last_ok[0] = now
                sent_here += 1
                break
        await quit_(client)

    tasks = [asyncio.create_task(client_task()) for _ in range(concurrency)]
    await ready.wait()
    meter = common.CpuMeter(pids)
    t0 = time.perf_counter()
    await asyncio.gather(*tasks)
    accept_seconds = last_ok[0] - t0 if latencies else 0.0
    ok = len(latencies)
    # End to end: until the sink has every accepted message.
    e2e_seconds = None
    deadline = time.perf_counter() + e2e_timeout
    count = rewritten = 0
    while time.perf_counter() < deadline:
        count, rewritten, _ = await sink.query()
        if count >= ok * rcpts:
            e2e_seconds = time.perf_counter() - t0
            break
        await asyncio.sleep(0.01)
    cpu = meter.stop()
    return PhaseResult(target, messages, ok, errors, accept_seconds, e2e_seconds,
                       sorted(latencies), count, rewritten, cpu, retried)


async def run_memory(port: int, sink: SinkControl, target: str, n: int, template: bytes,
                     rcpt_pool: int, offset: int, pid: int, timeout: float) -> dict:
    """n clients connect and log in, then each sends one big message at once."""
    import aiosmtplib

    await sink.query("reset")
    base = common.proc_status(pid)
    base_pss = common.pss_kb(pid)
    reset_ok = common.reset_hwm(pid)
    ready = asyncio.Barrier(n + 1)
    errors: dict[str, int] = {}
    latencies: list[float] = []

    async def one(k: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                                 use_tls=False, timeout=300, local_hostname="bench-client")
        await client.connect()
        await client.login(USER, PASSWORD)
        data = render(template, offset + k, recipient(offset + k, rcpt_pool))
        await ready.wait()
        started = time.perf_counter()
        try:
            await client.sendmail(SENDER, [recipient(offset + k, rcpt_pool)], data)
            latencies.append(time.perf_counter() - started)
        except (aiosmtplib.SMTPException, OSError) as exc:
            key = f"{type(exc).__name__}: {str(exc)[:60]}"
            errors[key] = errors.get(key, 0) + 1
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    peak_pss = [common.pss_kb(pid)]
    sampling = [True]

    async def sample() -> None:  # no kernel counter keeps a peak PSS: poll it
        while sampling[0]:
            peak_pss[0] = max(peak_pss[0], await asyncio.to_thread(common.pss_kb, pid))
            await asyncio.sleep(0.02)

    tasks = [asyncio.create_task(one(k)) for k in range(n)]
    await ready.wait()
    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()
    await asyncio.gather(*tasks)
    accepted_at = time.perf_counter() - t0
    delivered_at = None
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        count, _, _ = await sink.query()
        if count >= len(latencies):
            delivered_at = time.perf_counter() - t0
            break
        await asyncio.sleep(0.05)
    sampling[0] = False
    await sampler
    after = common.proc_status(pid)
    return {"target": target, "ok": len(latencies), "errors": errors,
            "rss_before_kb": base["VmRSS"], "hwm_kb": after["VmHWM"],
            "pss_before_kb": base_pss, "pss_peak_kb": peak_pss[0],
            "hwm_reset": reset_ok, "accept_s": accepted_at, "e2e_s": delivered_at,
            "max_latency": max(latencies) if latencies else float("nan")}


def spool_report(data_dir: Path) -> dict:
    """What the gateway's spools (one per worker process) and ledger hold (read-only,
    beside the running gateway)."""
    rows = []
    for path in sorted(data_dir.glob("spool*.db")):
        spool = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows += spool.execute("SELECT kind, status, COUNT(*) FROM spool "
                                  "GROUP BY kind, status").fetchall()
        finally:
            spool.close()
    ledger = sqlite3.connect(f"file:{data_dir / 'ledger.db'}?mode=ro", uri=True, timeout=10)
    try:
        decisions = ledger.execute("SELECT outcome, reason, COUNT(*) FROM decisions "
                                   "WHERE channel = 'email' GROUP BY outcome, reason"
                                   ).fetchall()
        tokens = ledger.execute("SELECT COUNT(*) FROM tokens").fetchone()[0]
    finally:
        ledger.close()
    return {"spool": rows, "decisions": decisions, "tokens": tokens}


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def print_phase_table(results: list[PhaseResult]) -> None:
    rows = []
    for r in results:
        lat = r.latencies
        own = r.cpu.get("own", {})
        front = own.get("gateway" if r.target.startswith("gateway") else "bare", 0.0)
        rows.append([
            r.target, r.ok, sum(r.errors.values()),
            f"{r.accept_rate:.0f}", f"{r.e2e_rate:.0f}" if r.e2e_rate else "timeout",
            fmt_ms(common.percentile(lat, 50)), fmt_ms(common.percentile(lat, 99)),
            fmt_ms(lat[-1]) if lat else "-",
            f"{front / max(1, r.ok) * 1000:.2f}",
            f"{own.get('sink', 0) / max(1, r.ok) * 1000:.2f}",
            f"{own.get('bench-client', 0) / max(1, r.ok) * 1000:.2f}",
            f"{r.cpu.get('others_cores', 0):.2f}",
            f"{r.sink_rewritten}/{r.sink_count}",
        ])
    print(common.table(
        ["target", "msgs ok", "errors", "accepted/s", "e2e/s", "p50 ms", "p99 ms", "max ms",
         "front cpu ms/msg", "sink cpu ms/msg", "client cpu ms/msg", "others (cores)",
         "sink rewritten/got"], rows))
    for r in results:
        if r.errors:
            print(f"  errors ({r.target}): {r.errors}")
        if r.retried:
            print(f"  sent again on a new connection ({r.target}): {r.retried}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=textwrap.dedent(__doc__.split("\n\n", 1)[1]))
    ap.add_argument("--messages", type=int, default=3000, help="messages per target (3000)")
    ap.add_argument("--concurrency", type=int, default=20, help="concurrent clients (20)")
    ap.add_argument("--size", type=int, default=8192, help="message size in bytes (8192)")
    ap.add_argument("--warmup", type=int, default=200, help="untimed messages first (200)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="bare/gateway pairs to run, alternating; judged by the median (3)")
    ap.add_argument("--rcpts", type=int, default=1,
                    help="recipients per message (1; the issue's second load: 10)")
    ap.add_argument("--recipients", type=int, default=1000,
                    help="distinct seeded recipients, cycled (1000)")
    ap.add_argument("--per-connection", type=int, default=100,
                    help="messages per SMTP connection before a client reconnects (100; "
                         "0: never. The gateway drops a connection after max_recipients+20 "
                         "RCPTs in all: aiosmtpd's command_call_limit counts per connection)")
    ap.add_argument("--workers", type=int, default=20,
                    help="gateway [delivery] workers (20, the default of the config)")
    ap.add_argument("--relay-pool", type=int, default=0,
                    help="bare relay's upstream connections (default: --concurrency)")
    ap.add_argument("--allow-headers", choices=("true", "false"), default="true",
                    help="the stream's allow_headers (true: decide at DATA only)")
    ap.add_argument("--mem-messages", type=int, default=20, help="memory test: messages (20)")
    ap.add_argument("--mem-size", type=float, default=10.0, help="memory test: MB each (10)")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    common.add_run_options(ap, ("sink", "relay"), "relay")
    args = ap.parse_args()
    if args.rcpts > 1 and args.per_connection:  # stay under the RCPT limit per connection
        args.per_connection = max(1, min(args.per_connection, 100 // args.rcpts))

    if args.role == "sink":
        role_sink(args.port, args.port2)
        return 0
    if args.role == "relay":
        role_relay(args.port, args.port2, args.relay_pool or args.concurrency,
                   args.bare_processes)
        return 0
    return orchestrate(args)


def orchestrate(args) -> int:
    root = args.work_dir or common.default_work_root()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-smtp-", dir=root))
    data_dir = work / "gateway-data"
    data_dir.mkdir()
    me = Path(__file__).resolve()
    procs: list[common.Proc] = []
    profiled = None  # the gateway's pid under py-spy: stopped first, by pid
    print(f"bench_smtp: {args.messages} msgs x {args.size} B, {args.concurrency} clients, "
          f"{args.rounds} round(s); gateway: {args.processes} process(es), "
          f"{args.workers} delivery workers each; bare relay: {args.bare_processes} "
          "process(es)")
    print(f"work dir {work} (file system {common.fs_type(work)}); "
          f"{common.load_note()} before start")
    others = common.busiest_others(3, {os.getpid()})
    print("busiest other processes (CPU s over 1 s): "
          + ("; ".join(f"{cpu:.2f} {cmd}" for cmd, cpu in others) or "none"))
    try:
        sink_port, sink_ctl, bare_port = (common.free_port() for _ in range(3))
        gw_smtp, gw_http = common.free_port(), common.free_port()
        sink = common.spawn("sink", [sys.executable, str(me), "--role", "sink", "--port",
                                     str(sink_port), "--port2", str(sink_ctl)], work)
        procs.append(sink)
        bare = common.spawn("bare", [sys.executable, str(me), "--role", "relay", "--port",
                                     str(bare_port), "--port2", str(sink_port),
                                     "--concurrency", str(args.concurrency),
                                     "--relay-pool", str(args.relay_pool),
                                     "--bare-processes", str(args.bare_processes)], work)
        procs.append(bare)
        seed_recipients(data_dir, args.recipients)
        config = work / "gateway.toml"
        config.write_text(GATEWAY_TOML.format(
            data_dir=data_dir, smtp_port=gw_smtp, http_port=gw_http, sink_port=sink_port,
            workers=args.workers, user=USER, password=PASSWORD, processes=args.processes,
            allow_headers=args.allow_headers,
            max_size=max(26214400, int(args.mem_size * 2 ** 20 * 1.2))))
        args.keep = args.keep or bool(args.profile)
        gateway = common.spawn_gateway(config, work, args.log_level, args.profile)
        procs.append(gateway)
        common.wait_port(sink, sink_port)
        common.wait_port(sink, sink_ctl)
        common.wait_port(bare, bare_port)
        common.wait_http(gateway, f"http://127.0.0.1:{gw_http}/healthz")
        common.wait_port(gateway, gw_smtp)
        gw_pid = common.measured_pid(gateway, args.profile)
        profiled = gw_pid if args.profile else None
        pids = {"sink": sink.pid, "bare": bare.pid, "gateway": gw_pid}
        return asyncio.run(run_all(args, pids, sink_ctl, bare_port, gw_smtp, data_dir,
                                   procs))
    finally:
        common.stop_all(procs, profiled, work, args.keep)


async def run_all(args, pids, sink_ctl, bare_port, gw_smtp, data_dir, procs) -> int:
    sink = SinkControl(sink_ctl)
    template = template_8k(args.size)
    print(f"message: multipart/alternative, {len(render(template, 0, 'x@example.com'))} "
          f"bytes, {args.rcpts} recipient(s), AUTH LOGIN/PLAIN as the stream; a new "
          f"connection every {args.per_connection or 'never'} messages")
    targets = {"bare": bare_port, "gateway": gw_smtp}
    offset = 0
    sent_to_gateway = 0
    copies_expected = 0  # a copy per recipient
    results: list[PhaseResult] = []
    status = 0
    if not args.skip_throughput:
        for name, port in targets.items():  # warm both up (imports, caches, connections)
            w = await run_load(port, sink, f"{name}-warmup", args.warmup, args.concurrency,
                               template, args.recipients, offset, pids, 60,
                               args.per_connection, args.rcpts)
            offset += args.warmup
            sent_to_gateway += w.ok if name == "gateway" else 0
            copies_expected += w.ok * args.rcpts if name == "gateway" else 0
        for rnd in range(args.rounds):
            order = list(targets.items()) if rnd % 2 == 0 else list(targets.items())[::-1]
            for name, port in order:
                label = f"{name}" + (f" #{rnd + 1}" if args.rounds > 1 else "")
                r = await run_load(port, sink, label, args.messages, args.concurrency,
                                   template, args.recipients, offset, pids, 120,
                                   args.per_connection, args.rcpts)
                offset += args.messages
                if name == "gateway":
                    sent_to_gateway += r.ok
                    copies_expected += r.ok * args.rcpts
                results.append(r)
                print(f"  {label:<12} accepted {r.accept_rate:7.0f}/s  e2e "
                      f"{(r.e2e_rate or 0):7.0f}/s  p99 "
                      f"{fmt_ms(common.percentile(r.latencies, 99))} ms  "
                      f"(others used {r.cpu['others_cores']:.2f} cores)", flush=True)
        print()
        print(f"THROUGHPUT (8 KB marketing message, {args.rcpts} recipient(s), AUTH; "
              "rates in messages)")
        print_phase_table(results)
        bare_r = [r for r in results if r.target.startswith("bare")]
        gw_r = [r for r in results if r.target.startswith("gateway")]
        print()
        ratio_rows, ratios = [], []
        for b, g in zip(bare_r, gw_r):
            acc = g.accept_rate / b.accept_rate if b.accept_rate else 0
            e2e = (g.e2e_rate or 0) / (b.e2e_rate or 1)
            p99_ratio = common.percentile(g.latencies, 99) / common.percentile(b.latencies, 99)
            ratios.append(min(acc, e2e))
            ratio_rows.append([g.target.replace("gateway", "round") or "round", f"{acc:.2f}",
                               f"{e2e:.2f}",
                               f"{p99_ratio:.2f}",
                               "PASS" if min(acc, e2e) >= 0.7 else "FAIL"])
        print(common.table(["", "accepted ratio gw/bare", "e2e ratio gw/bare",
                            "p99 ratio gw/bare", "target >= 0.70x"], ratio_rows))
        line, ok = common.ratio_summary("min(accepted, e2e) ratio gw/bare", ratios)
        print(line)
        if not ok:
            status = 1

    mem = []
    if not args.skip_memory:
        big = template_big(int(args.mem_size * 2 ** 20))
        size = len(render(big, 0, "x@example.com"))
        print()
        print(f"MEMORY: {args.mem_messages} concurrent messages of {size / 2 ** 20:.1f} MB "
              "(multipart/mixed: alternative + base64 attachment)")
        for name, port in targets.items():
            pid = pids[name]
            m = await run_memory(port, sink, name, args.mem_messages, big, args.recipients,
                                 offset, pid, 300)
            offset += args.mem_messages
            if name == "gateway":
                sent_to_gateway += m["ok"]
                copies_expected += m["ok"]
            mem.append(m)
        rows = [[m["target"], m["ok"], sum(m["errors"].values()), common.mb(m["rss_before_kb"]),
                 common.mb(m["hwm_kb"]), common.mb(m["hwm_kb"] - m["rss_before_kb"]),
                 common.mb(m["pss_before_kb"]), common.mb(m["pss_peak_kb"]),
                 f"{m['accept_s']:.2f}", f"{m['e2e_s']:.2f}" if m["e2e_s"] else "timeout"]
                for m in mem]
        print(common.table(["front process(es)", "msgs ok", "errors", "RSS before MB",
                            "peak RSS (VmHWM) MB", "peak - before MB", "PSS before MB",
                            "peak PSS (sampled) MB", "all accepted s", "all at sink s"], rows))
        print("  RSS sums each process's pages, shared ones (a forked worker's) once per "
              "process; PSS counts a shared page once in all, sampled every 20 ms.")
        if not all(m["hwm_reset"] for m in mem):
            print("  note: could not reset VmHWM; peaks include the throughput test")
        for m in mem:
            if m["errors"]:
                print(f"  errors ({m['target']}): {m['errors']}")
        ratio = mem[1]["hwm_kb"] / mem[0]["hwm_kb"]
        pss_ratio = mem[1]["pss_peak_kb"] / mem[0]["pss_peak_kb"]
        print(f"peak RSS ratio gateway/bare: {ratio:.2f}; peak PSS ratio: {pss_ratio:.2f}  "
              f"(target < 2.0: {'PASS' if max(ratio, pss_ratio) < 2 else 'FAIL'})")
        if max(ratio, pss_ratio) >= 2:
            status = 1

    # Durability / bookkeeping check on the gateway's side.
    await asyncio.sleep(0.3)
    rep = spool_report(data_dir)
    copies = sum(n for kind, st, n in rep["spool"] if kind == "copy")
    delivered = sum(n for kind, st, n in rep["spool"] if kind == "copy" and st == "delivered")
    decisions = sum(n for _, _, n in rep["decisions"])
    print()
    print(f"GATEWAY BOOKKEEPING: {sent_to_gateway} messages answered 250; spool holds "
          f"{copies} copies ({delivered} delivered); {decisions} email decisions recorded "
          f"{[(o, r, n) for o, r, n in rep['decisions']]}; {rep['tokens']} tokens")
    if not (copies == delivered == decisions == rep["tokens"] == copies_expected):
        print("  MISMATCH: every accepted message should be spooled, delivered, decided once")
        status = 1
    print(f"{common.load_note()} at the end")
    return status


if __name__ == "__main__":
    sys.exit(main())
