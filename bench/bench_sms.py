#!/usr/bin/env python3
"""SMS benchmark: the gateway's Twilio-compatible endpoint against a bare aiohttp forwarder.

Processes (each in its own interpreter):

    load generator (this process: aiohttp client, --concurrency requests in flight)
        |-- (a) bare forwarder: aiohttp server; reads the form POST and forwards it to the
        |       stub with one shared ClientSession, answers with the stub's answer
        '-- (b) `gateway run` with [sms] provider = "twilio", api_base = the stub: basic
                auth, checks, one consent decision recorded per text, STOP text appended,
                sent through the provider adapter, Twilio message resource answered
    both send to the same stub provider (answers like Twilio's Messages API, 201).

Every request: POST /2010-04-01/Accounts/{stream}/Messages.json, HTTP basic auth
(stream id : api_key), form To / From / Body; every recipient holds sms consent, so the
gateway allows each text as marketing and appends the stop text. Reported: requests per
second, client-observed p50/p99, CPU per request, and the ratio gateway/bare. Afterwards
the gateway's ledger is read to check one decision was recorded per text.

Usage:  /work/venv/bin/python bench/bench_sms.py [--requests 5000] [--concurrency 20]
        [--rounds 3] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sqlite3
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

STREAM, API_KEY = "acme-news", "sk_bench_news"
SENDER = "+447400123000"
TWILIO_SID, TWILIO_TOKEN = "AC0123456789abcdef0123456789abcdef", "bench-twilio-token"
BODY = "Spring sale: 20% off hedge trimmers this weekend only at Acme Garden. See acme.test"
PATH = "/2010-04-01/Accounts/{sid}/Messages.json"


def numbers(pool: int) -> list[str]:
    """`pool` valid UK mobile numbers (E.164)."""
    import phonenumbers

    out, n = [], 0
    while len(out) < pool:
        candidate = f"+4474001{n:05d}"
        n += 1
        if phonenumbers.is_valid_number(phonenumbers.parse(candidate, "GB")):
            out.append(candidate)
    return out


# --------------------------------------------------------------------------------------
# Subprocess roles: stub provider and bare forwarder
# --------------------------------------------------------------------------------------

def role_stub(port: int) -> None:
    """Answers like Twilio's Messages API: 201 with a message resource."""
    from aiohttp import web

    count = [0]

    async def create(request: web.Request) -> web.Response:
        form = await request.post()
        count[0] += 1
        sid = "SM" + uuid.uuid4().hex
        return web.json_response({
            "sid": sid, "account_sid": request.match_info["sid"], "to": form.get("To"),
            "from": form.get("From"), "body": form.get("Body"), "status": "queued",
            "num_segments": "1", "direction": "outbound-api", "price": None,
            "date_created": "Mon, 02 Mar 2026 10:00:00 +0000",
            "uri": f"/2010-04-01/Accounts/{request.match_info['sid']}/Messages/{sid}.json",
        }, status=201)

    async def counter(request: web.Request) -> web.Response:
        if request.query.get("reset"):
            count[0] = 0
        return web.Response(text=str(count[0]))

    app = web.Application()
    app.router.add_post(PATH.format(sid="{sid}"), create)
    app.router.add_get("/count", counter)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def role_bare(port: int, stub_port: int, processes: int = 1) -> None:
    """The bare forwarder: same form POST in, forwarded with one shared ClientSession.
    With `processes` > 1, that many copies of it share the port (SO_REUSEPORT)."""
    for _ in range(processes - 1):
        if os.fork() == 0:
            break
    import aiohttp
    from aiohttp import web

    credentials = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    upstream = f"http://127.0.0.1:{stub_port}" + PATH.format(sid=TWILIO_SID)

    async def forward(request: web.Request) -> web.Response:
        form = await request.post()
        session: aiohttp.ClientSession = request.app["session"]
        async with session.post(upstream, data=dict(form), headers=headers) as resp:
            body = await resp.read()
            return web.Response(body=body, status=resp.status,
                                content_type="application/json")

    async def on_startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession()

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_post(PATH.format(sid="{account}"), forward)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None,
                reuse_port=True)


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

[http]
listen = "127.0.0.1:{http_port}"
public_url = "https://gw.bench.test"
admin_token = "bench-admin-token"

[unsubscribe]
secret = "bench-secret"

[delivery]
upstream = "maildir:{data_dir}/outbox"

[sms]
provider = "twilio"
stop_text = "Reply STOP to opt out"
outbox = "{data_dir}/sms.jsonl"

[sms.twilio]
account_sid = "{twilio_sid}"
auth_token = "{twilio_token}"
api_base = "http://127.0.0.1:{stub_port}"

[[org]]
id = "acme"
name = "Acme Garden Ltd"
type = "commercial"
default_region = "GB"

[[stream]]
id = "{stream}"
org = "acme"
purpose = "marketing"
category = "garden-tools"
smtp_username = "acme-news"
smtp_password = "bench-pass"
api_key = "{api_key}"
sms_from = ["{sender}"]
"""


def seed_consent(data_dir: Path, to: list[str]) -> None:
    from gateway.evidence import parse_evidence
    from gateway.ledger import Ledger

    ledger = Ledger(data_dir)
    try:
        ledger.record_evidence_many([parse_evidence({
            "org": "acme", "channel": "sms", "address": n, "basis": "consent",
            "obtained_at": "2026-01-10T10:00:00Z", "source": "signup form v3"},
            {"acme": "GB"}) for n in to], via="bench")
    finally:
        ledger.close()


@dataclass
class Result:
    target: str
    requests: int
    seconds: float
    latencies: list[float]
    statuses: dict
    errors: dict
    cpu: dict = field(default_factory=dict)
    checked: str = ""

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def run_load(base: str, target: str, n: int, concurrency: int, to: list[str],
                   offset: int, pids: dict[str, int], front: str) -> Result:
    import aiohttp

    url = base + PATH.format(sid=STREAM)
    auth = "Basic " + base64.b64encode(f"{STREAM}:{API_KEY}".encode()).decode()
    headers = {"Authorization": auth}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    bodies_ok = [0]
    indexes = iter(range(n))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def client() -> None:
            for i in indexes:
                form = {"To": to[(offset + i) % len(to)], "From": SENDER, "Body": BODY}
                started = time.perf_counter()
                try:
                    async with session.post(url, data=form, headers=headers) as resp:
                        answer = await resp.json(content_type=None)
                        status = resp.status
                except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                    key = f"{type(exc).__name__}: {str(exc)[:60]}"
                    errors[key] = errors.get(key, 0) + 1
                    continue
                statuses[status] = statuses.get(status, 0) + 1
                if status == 201:
                    latencies.append(time.perf_counter() - started)
                    if str(answer.get("body", "")).endswith("Reply STOP to opt out"):
                        bodies_ok[0] += 1

        # Open the connections first, so the clock measures requests only.
        async def touch() -> None:
            async with session.get(base + "/healthz") as resp:
                await resp.read()

        await asyncio.gather(*(touch() for _ in range(concurrency)), return_exceptions=True)
        meter = common.CpuMeter(pids)
        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
        cpu = meter.stop()
    r = Result(target, n, seconds, sorted(latencies), statuses, errors, cpu)
    r.checked = f"{bodies_ok[0]}/{r.ok}"
    return r


def stub_count(port: int, reset: bool = False) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count"
                                + ("?reset=1" if reset else ""), timeout=5) as resp:
        return int(resp.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=textwrap.dedent(__doc__.split("\n\n", 1)[1]))
    ap.add_argument("--requests", type=int, default=5000, help="requests per target (5000)")
    ap.add_argument("--concurrency", type=int, default=20, help="requests in flight (20)")
    ap.add_argument("--warmup", type=int, default=300, help="untimed requests first (300)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="bare/gateway pairs to run, alternating; judged by the median (3)")
    ap.add_argument("--recipients", type=int, default=1000,
                    help="distinct seeded numbers, cycled (1000)")
    common.add_run_options(ap, ("stub", "bare"), "forwarder")
    args = ap.parse_args()
    if args.role == "stub":
        role_stub(args.port)
        return 0
    if args.role == "bare":
        role_bare(args.port, args.port2, args.bare_processes)
        return 0
    return orchestrate(args)


def orchestrate(args) -> int:
    root = args.work_dir or common.default_work_root()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-sms-", dir=root))
    data_dir = work / "gateway-data"
    data_dir.mkdir()
    me = Path(__file__).resolve()
    procs: list[common.Proc] = []
    profiled = None
    print(f"bench_sms: {args.requests} requests per target, {args.concurrency} in flight, "
          f"{args.rounds} round(s); gateway: {args.processes} process(es), bare forwarder: "
          f"{args.bare_processes} process(es)")
    print(f"work dir {work} (file system {common.fs_type(work)}); "
          f"{common.load_note()} before start")
    others = common.busiest_others(3, {os.getpid()})
    print("busiest other processes (CPU s over 1 s): "
          + ("; ".join(f"{cpu:.2f} {cmd}" for cmd, cpu in others) or "none"))
    try:
        stub_port, bare_port, gw_http, gw_smtp = (common.free_port() for _ in range(4))
        stub = common.spawn("stub", [sys.executable, str(me), "--role", "stub", "--port",
                                     str(stub_port)], work)
        procs.append(stub)
        bare = common.spawn("bare", [sys.executable, str(me), "--role", "bare", "--port",
                                     str(bare_port), "--port2", str(stub_port),
                                     "--bare-processes", str(args.bare_processes)], work)
        procs.append(bare)
        to = numbers(args.recipients)
        seed_consent(data_dir, to)
        config = work / "gateway.toml"
        config.write_text(GATEWAY_TOML.format(
            data_dir=data_dir, smtp_port=gw_smtp, http_port=gw_http, stub_port=stub_port,
            twilio_sid=TWILIO_SID, twilio_token=TWILIO_TOKEN, stream=STREAM,
            api_key=API_KEY, sender=SENDER, processes=args.processes))
        args.keep = args.keep or bool(args.profile)
        gateway = common.spawn_gateway(config, work, args.log_level, args.profile)
        procs.append(gateway)
        common.wait_port(stub, stub_port)
        common.wait_port(bare, bare_port)
        common.wait_http(gateway, f"http://127.0.0.1:{gw_http}/healthz")
        gw_pid = common.measured_pid(gateway, args.profile)
        profiled = gw_pid if args.profile else None
        pids = {"stub": stub.pid, "bare": bare.pid, "gateway": gw_pid}
        return asyncio.run(run_all(args, pids, stub_port, bare_port, gw_http, data_dir, to))
    finally:
        common.stop_all(procs, profiled, work, args.keep)


async def run_all(args, pids, stub_port, bare_port, gw_http, data_dir, to) -> int:
    targets = {"bare": f"http://127.0.0.1:{bare_port}",
               "gateway": f"http://127.0.0.1:{gw_http}"}
    offset = 0
    sent_gateway = 0
    for name, base in targets.items():  # warm up both
        r = await run_load(base, f"{name}-warmup", args.warmup, args.concurrency, to, offset,
                           pids, name)
        offset += args.warmup
        sent_gateway += r.ok if name == "gateway" else 0
        if r.ok != args.warmup:
            print(f"warm-up through {name} failed: statuses {r.statuses} errors {r.errors}")
            return 1
    results: list[Result] = []
    for rnd in range(args.rounds):
        order = list(targets.items()) if rnd % 2 == 0 else list(targets.items())[::-1]
        for name, base in order:
            label = name + (f" #{rnd + 1}" if args.rounds > 1 else "")
            before = await asyncio.to_thread(stub_count, stub_port)
            r = await run_load(base, label, args.requests, args.concurrency, to, offset, pids,
                               name)
            after = await asyncio.to_thread(stub_count, stub_port)
            r.checked += f", stub got {after - before}"
            offset += args.requests
            if name == "gateway":
                sent_gateway += r.ok
            results.append(r)
            print(f"  {label:<12} {r.rate:7.0f} req/s  p99 "
                  f"{common.percentile(r.latencies, 99) * 1000:.1f} ms  (others used "
                  f"{r.cpu['others_cores']:.2f} cores)", flush=True)
    print()
    print("TWILIO-COMPATIBLE SEND (POST .../Messages.json, basic auth, form To/From/Body)")
    rows = []
    for r in results:
        own = r.cpu["own"]
        front = own["gateway" if r.target.startswith("gateway") else "bare"]
        rows.append([r.target, r.ok, r.requests - r.ok, f"{r.rate:.0f}",
                     f"{common.percentile(r.latencies, 50) * 1000:.1f}",
                     f"{common.percentile(r.latencies, 99) * 1000:.1f}",
                     f"{r.latencies[-1] * 1000:.1f}" if r.latencies else "-",
                     f"{front / max(1, r.ok) * 1000:.2f}",
                     f"{own['stub'] / max(1, r.ok) * 1000:.2f}",
                     f"{own['bench-client'] / max(1, r.ok) * 1000:.2f}",
                     f"{r.cpu['others_cores']:.2f}", r.checked])
    print(common.table(["target", "201s", "not 201", "req/s", "p50 ms", "p99 ms", "max ms",
                        "front cpu ms/req", "stub cpu ms/req", "client cpu ms/req",
                        "others (cores)", "STOP text / stub got"], rows))
    for r in results:
        if r.errors or set(r.statuses) - {201}:
            print(f"  {r.target}: statuses {r.statuses} errors {r.errors}")
    print()
    ratio_rows, ratios = [], []
    for b, g in zip([r for r in results if r.target.startswith("bare")],
                    [r for r in results if r.target.startswith("gateway")]):
        ratio = g.rate / b.rate if b.rate else 0.0
        ratios.append(ratio)
        p99 = common.percentile(g.latencies, 99) / common.percentile(b.latencies, 99)
        ratio_rows.append([g.target.replace("gateway", "round"), f"{ratio:.2f}", f"{p99:.2f}",
                           "PASS" if ratio >= 0.7 else "FAIL"])
    print(common.table(["", "req/s ratio gw/bare", "p99 ratio gw/bare", "target >= 0.70x"],
                       ratio_rows))
    line, ok = common.ratio_summary("req/s ratio gw/bare", ratios)
    print(line)
    status = int(not ok)
    await asyncio.sleep(0.2)
    ledger = sqlite3.connect(f"file:{data_dir / 'ledger.db'}?mode=ro", uri=True, timeout=10)
    try:
        decisions = ledger.execute("SELECT outcome, reason, COUNT(*) FROM decisions WHERE "
                                   "channel = 'sms' GROUP BY outcome, reason").fetchall()
    finally:
        ledger.close()
    total = sum(n for _, _, n in decisions)
    print(f"\nGATEWAY BOOKKEEPING: {sent_gateway} texts answered 201; {total} sms decisions "
          f"recorded {decisions}")
    if total != sent_gateway:
        print("  MISMATCH: one decision per text expected")
        status = 1
    print(f"{common.load_note()} at the end")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
