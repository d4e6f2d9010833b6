"""How fast the status page answers with a year of decisions in the ledger.

Fills a ledger with N decisions spread evenly over the last 365 days (and opt-outs), starts
the gateway on it, and times GET /status, /status.json and /metrics against GET /healthz
(a near-empty handler: the bare baseline) in one run.

    python bench/bench_status.py --decisions 3000000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import make_settings

from gateway import server
from gateway.ledger import Ledger
from gateway.policy import reasons


def fill(data_dir: Path, count: int) -> float:
    ledger = Ledger(data_dir)
    now = datetime.now(UTC)
    start = time.perf_counter()
    rng = random.Random(7)
    codes = list(reasons.ALL)
    batch = []
    for i in range(count):
        at = (now - timedelta(seconds=i * 365 * 86400 / count)).isoformat()
        reason = rng.choice(codes)
        allowed = int(reason in reasons.ALLOWING)
        batch.append((at, "acme", "acme-news", rng.choice(("email", "sms")),
                      f"p{rng.randrange(count // 3 + 1)}@example.com", "marketing", "commercial",
                      "garden-tools", allowed, "allowed" if allowed else "blocked", reason,
                      None, f"<m{i}@bench>", "enforce", "uk-pecr", ""))
        if len(batch) == 50_000:
            _insert(ledger, batch)
            batch.clear()
    _insert(ledger, batch)
    outs = [("acme", "email", f"p{i}@example.com", "optout",
             (now - timedelta(minutes=i)).isoformat(), "", rng.choice(("link", "one-click")),
             None, None, None) for i in range(count // 100)]
    with ledger._write_lock():
        ledger.conn.executemany("INSERT INTO optouts (org, channel, address, kind, at, source, "
                                "method, message_id, client, token) VALUES (?,?,?,?,?,?,?,?,?,?)",
                                outs)
    ledger.conn.execute("ANALYZE")
    ledger.close()
    return time.perf_counter() - start


def _insert(ledger: Ledger, rows: list) -> None:
    with ledger._write_lock():
        ledger.conn.execute("BEGIN")
        ledger.conn.executemany(
            "INSERT INTO decisions (at, org, stream, channel, address, purpose, nature, category, "
            "allowed, outcome, reason, evidence_id, message_id, mode, ruleset, explanation) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        ledger.conn.execute("COMMIT")


async def time_get(http: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        async with http.get(url) as resp:
            await resp.read()
            assert resp.status == 200, (url, resp.status)
        times.append((time.perf_counter() - t) * 1000)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp))
        took = fill(settings.gateway.data_dir, args.decisions)
        print(f"ledger: {args.decisions:,} decisions over 365 days, "
              f"{args.decisions // 100:,} opt-outs (filled in {took:.1f} s)")
        async with await server.start(settings) as gw:
            base = gw.runtime.settings.http.public_url
            auth = {"Authorization": aiohttp.encode_basic_auth("ops", "test-admin-token")}
            async with aiohttp.ClientSession(headers=auth) as http:
                print(f"{'GET':32} {'p50 ms':>8} {'max ms':>8} {'x healthz':>10}")
                base_p50 = None
                for path in ("/healthz", "/status", "/status.json", "/metrics",
                             "/status?reason=opted_out", "/status?address=p1@example.com"):
                    times = await time_get(http, base + path, args.requests)
                    p50 = statistics.median(times)
                    base_p50 = base_p50 or p50
                    print(f"{path:32} {p50:8.1f} {max(times):8.1f} {p50 / base_p50:10.1f}")


if __name__ == "__main__":
    asyncio.run(main())
