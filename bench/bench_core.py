#!/usr/bin/env python3
"""Consent-core benchmark: the rules engine, a decision with its ledger lookup, CSV import.

All in this one process, no sockets (but for the PostgreSQL run of (b), --pg-admin):

    (a) engine   gateway.policy.decide alone over realistic histories of 1-3 evidence
                 records (soft opt-ins, consents, third-party consents, corporate
                 subscribers; some persons opted out): decisions per second.
    (b) lookup   a ledger of --records evidence records (distinct addresses, appended with
                 Ledger.record_evidence_many in batches), then ConsentService.evaluate
                 (classification, history lookup in SQLite, decision) for random
                 addresses: p50/p99 latency. Target: p99 < 1 ms.
                 With --pg-admin URL, the same again on PostgreSQL: a fresh database is
                 created through URL (any database of a role that may CREATE DATABASE),
                 the SQLite ledger just built is copied into it by `gateway ledger copy`
                 (timed with its process start: records/s; target 1M records in < 2 min),
                 autovacuum's work on the copy (VACUUM ANALYZE) is done before the clock
                 starts, and the same random addresses are evaluated: p50/p99. Target:
                 p99 < 5 ms. The database is dropped afterwards unless --keep.
    (s) suppression  with (b)'s ledger: --erasures people erased (gateway.privacy), then an
                 erased person's suppression lookup (HMAC-SHA256 of address and channel,
                 then the indexed SELECT on `suppressions`) against an opt-out lookup (the
                 indexed SELECT on `optouts`) for the same random addresses, each alone:
                 mean and p99 per lookup, in CPU time of the thread. Target: the
                 suppression lookup costs what an opt-out lookup costs (ratio <= 1.2).
    (c) import   a CSV of --import-rows rows (80 % email, 20 % UK mobile numbers, 0.1 %
                 bad rows) through gateway.importer.import_csv, against a bare baseline:
                 csv.reader + executemany of the same rows into the same table with no
                 validation. Target: >= 20,000 rows/s.

Databases live on the normal disk (/var/tmp), not tmpfs. Figures are noisy on a shared
machine: the load average is printed with each part; run twice.

Usage:  /work/venv/bin/python bench/bench_core.py [--records 1000000]
        [--import-rows 1000000] [--lookups 20000] [--decisions 300000]
        [--only engine,lookup,suppression,import] [--erasures 1000] [--keep] [--rulesets]
        [--pg-admin postgresql://USER@HOST:PORT/postgres [--pg-copy cli|function]]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

from gateway import config
from gateway.consent import Classification, ConsentService
from gateway.importer import import_csv
from gateway.ledger import Ledger, now_iso
from gateway.policy import ALL_ORGS, Evidence, MessageContext, OptOut, OrgPolicy, decide

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SIMILAR = (frozenset({"lawnmowers", "hedge-trimmers", "garden-tools"}),
           frozenset({"decking", "fencing"}))
CATEGORIES = ("lawnmowers", "hedge-trimmers", "garden-tools", "decking", "fencing")
BATCH = 50_000
INSERT = ("INSERT INTO evidence (org, channel, address, basis, obtained_at, source, "
          "categories, context, collected_by, opt_out_offered, named_orgs, recorded_at, "
          "recorded_via) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")

CONFIG = """\
[gateway]
data_dir = "{data_dir}"

[[org]]
id = "acme"
name = "Acme Garden Ltd"
type = "commercial"
{rulesets}similar = [["lawnmowers", "hedge-trimmers", "garden-tools"], ["decking", "fencing"]]

[[stream]]
id = "acme-news"
org = "acme"
category = "hedge-trimmers"
"""


# --rulesets: the org chooses a rule set per recipient (docs/rulesets.md); the bench's
# people have no region, so they are decided under `default` after the look for one.
RULESETS = ('rulesets = { default = "uk-pecr", EU = "eu-eprivacy", DE = "eu-de", '
            'US = "us", CA = "ca-casl", AU = "au-spam" }\n'
            'postal_address = "1 Garden Way, Leeds"\ncontact = "hello@acme.test"\n')


# -- realistic records --------------------------------------------------------------------


def email_address(n: int) -> str:
    return f"person.{n}@example{n % 997}.com"


def phone_number(n: int) -> str:
    """Distinct valid UK mobile numbers in national format: 074 00000000 onwards."""
    return f"074 {n % 100_000_000:08d}"


def evidence(rng: random.Random, n: int, address: str, channel: str = "email") -> Evidence:
    """One record of the kinds real evidence holds, in realistic proportions."""
    when = NOW - timedelta(days=rng.randrange(1, 900), seconds=rng.randrange(86400))
    kind = rng.random()
    base = {"id": str(n), "org": "acme", "channel": channel, "address": address,
            "obtained_at": when}
    if kind < 0.55:
        return Evidence(**base, basis="soft_opt_in", source="checkout, opt-out box shown",
                        categories=tuple(rng.sample(CATEGORIES, rng.randint(1, 2))),
                        context=rng.choice(("sale", "sale", "negotiation", "enquiry")),
                        opt_out_offered=rng.random() < 0.95)
    if kind < 0.85:
        return Evidence(**base, basis="consent", source="signup form v3")
    if kind < 0.95:
        named = ("Acme Garden Ltd", "Bloom Ltd") if rng.random() < 0.5 else ()
        return Evidence(**base, basis="consent", source="partner site", collected_by="third_party",
                        named_orgs=named)
    return Evidence(**base, basis="corporate_subscriber", source="account manager")


def history(rng: random.Random, n: int) -> tuple[tuple[Evidence, ...], tuple[OptOut, ...]]:
    address = email_address(n)
    records = tuple(evidence(rng, n * 3 + k, address) for k in range(rng.randint(1, 3)))
    outs: tuple[OptOut, ...] = ()
    if rng.random() < 0.1:
        outs = (OptOut(id=str(n), org="acme", channel=rng.choice(("email", "all")),
                       address=address, at=NOW - timedelta(days=rng.randrange(1, 300))),)
    return records, outs


# -- (a) engine ---------------------------------------------------------------------------


def bench_engine(count: int, seed: int) -> dict:
    rng = random.Random(seed)
    org = OrgPolicy(id="acme", name="Acme Garden Ltd", similar=SIMILAR,
                    known_categories=frozenset({"hedge-trimmers"}))
    ctx = MessageContext(org=org, channel="email", category="hedge-trimmers", now=NOW)
    histories = [history(rng, n) for n in range(2000)]
    reasons: Counter[str] = Counter()
    for records, outs in histories:  # warm-up, and the mix of outcomes
        reasons[decide(ctx, records, outs).reason] += 1
    started = time.perf_counter()
    done = 0
    while done < count:
        for records, outs in histories:
            decide(ctx, records, outs)
        done += len(histories)
    elapsed = time.perf_counter() - started
    return {"decisions": done, "seconds": elapsed, "per_second": done / elapsed,
            "mean_us": elapsed / done * 1e6, "reasons": reasons}


# -- (b) decision with its ledger lookup ------------------------------------------------


def build_ledger(work: Path, records: int, seed: int) -> tuple[Ledger, float]:
    rng = random.Random(seed)
    ledger = Ledger(work / "lookup")
    started = time.perf_counter()
    for start in range(0, records, BATCH):
        ledger.record_evidence_many(
            (evidence(rng, n, email_address(n)) for n in range(start, min(start + BATCH,
                                                                          records))),
            via="bench")
    for n in range(0, records, max(1, records // 1000)):  # about 1,000 opt-outs
        ledger.record_opt_out("acme", "email", email_address(n), method="bench")
    return ledger, time.perf_counter() - started


def time_lookups(settings: config.Settings, ledger, records: int, lookups: int,
                 seed: int) -> dict:
    """ConsentService.evaluate for random addresses (the same ones for the same seed)."""
    service = ConsentService(settings, ledger)
    marketing = Classification("acme", "acme-news", "marketing", "commercial",
                               "hedge-trimmers")
    rng = random.Random(seed + 1)
    for _ in range(1000):  # warm the page cache and the statement cache
        service.evaluate(marketing, "email", email_address(rng.randrange(records)))
    timings: list[float] = []
    reasons: Counter[str] = Counter()
    clock = time.perf_counter_ns
    for _ in range(lookups):
        address = email_address(rng.randrange(records))
        started = clock()
        decision = service.evaluate(marketing, "email", address)
        timings.append((clock() - started) / 1e6)
        reasons[decision.reason] += 1
    timings.sort()
    return {"lookups": lookups,
            "p50": common.percentile(timings, 50), "p90": common.percentile(timings, 90),
            "p99": common.percentile(timings, 99), "max": timings[-1],
            "mean": sum(timings) / len(timings), "reasons": reasons}


def time_suppression(settings: config.Settings, ledger, records: int, lookups: int,
                     erasures: int, seed: int) -> dict:
    """(s): erase `erasures` people, then time a suppression lookup against an opt-out
    lookup, each alone, for the same random addresses (see the module docstring)."""
    from gateway.privacy.erasure import ErasureRequest, Erasures

    service = ConsentService(settings, ledger)
    eraser = Erasures(ledger, service)
    step = max(1, records // max(1, erasures))
    for n in range(step // 2, records, step):  # not the people who opted out
        eraser.erase(ErasureRequest("email", email_address(n), "acme", "bench"))
    optout_sql = ("SELECT id, org, channel, at, kind FROM optouts "
                  "WHERE address = ? AND org IN (?, ?)")
    suppression_sql = "SELECT id, org, channel, at FROM suppressions WHERE hash = ?"
    read, key = ledger._tuples, service.suppression
    rng = random.Random(seed + 2)
    people = [email_address(rng.randrange(records)) for _ in range(lookups)]
    people += [email_address(n) for n in range(step // 2, records, step)][:lookups // 10]
    # CPU time of this thread: on a shared machine wall time mostly measures the others.
    clock = time.thread_time_ns
    timings: dict[str, list[float]] = {"optout": [], "suppression": []}
    for rounds in range(2):  # the first round warms the caches; the second is timed
        for address in people:
            started = clock()
            read(optout_sql, (address, "acme", ALL_ORGS))
            middle = clock()
            read(suppression_sql, (key.of("email", address),))
            ended = clock()
            if rounds:
                timings["optout"].append((middle - started) / 1e3)
                timings["suppression"].append((ended - middle) / 1e3)
    result = {"erasures": len(range(step // 2, records, step)), "lookups": len(people)}
    for name, values in timings.items():
        values.sort()
        result[name] = {"mean": sum(values) / len(values), "p50": common.percentile(values, 50),
                        "p99": common.percentile(values, 99)}
    result["ratio"] = result["suppression"]["mean"] / result["optout"]["mean"]
    return result


def bench_lookup(work: Path, records: int, lookups: int, seed: int,
                 pg_admin: str | None = None, pg_copy: str = "cli",
                 keep: bool = False, rulesets: bool = False, erasures: int = 0) -> dict:
    ledger, build_seconds = build_ledger(work, records, seed)
    settings = config.parse(CONFIG.format(data_dir=work / "lookup", rulesets=RULESETS
                                          if rulesets else ""), None, work)
    try:
        result = time_lookups(settings, ledger, records, lookups, seed)
        if erasures:
            result["suppression"] = time_suppression(settings, ledger, records, lookups,
                                                     erasures, seed)
            result["erased_lookups"] = time_lookups(settings, ledger, records, lookups, seed)
        if pg_admin:
            print(f"(b) SQLite lookups done; {common.load_note()}", flush=True)
            result["pg"] = bench_pg_lookup(work, settings, ledger, pg_admin, pg_copy, records,
                                           lookups, seed, keep)
    finally:
        ledger.close()
    size = sum(f.stat().st_size for f in (work / "lookup").iterdir())
    return {**result, "records": records, "build_seconds": build_seconds,
            "build_per_second": records / build_seconds, "db_mb": size / 1e6}


# -- (b) on PostgreSQL: `gateway ledger copy`, then the same lookups --------------------


def create_database(admin_url: str) -> tuple[str, str]:
    """A fresh, empty database next to `admin_url`'s: (its name, its URL)."""
    import psycopg  # only with --pg-admin: SQLite runs need no driver

    name = f"bench_core_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, urlsplit(admin_url)._replace(path=f"/{name}").geturl()


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def copy_with_cli(work: Path, url: str) -> None:
    """`gateway ledger copy --to URL --quiet` in its own process, on the config whose
    data_dir holds the SQLite ledger; the gateway package of this checkout."""
    cfg = work / "gateway.toml"
    cfg.write_text(CONFIG.format(data_dir=work / "lookup"), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(common.REPO), os.environ.get("PYTHONPATH", "")) if p)}
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "ledger", "copy", "--to", url,
                          "--quiet", "--config", str(cfg)],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"gateway ledger copy failed ({out.returncode}): {out.stderr}")


def history_plan(ledger) -> str:
    """How PostgreSQL runs the history lookup: the scans of its EXPLAIN."""
    from gateway.ledger.queries import HISTORY_SELECT

    address = email_address(1)
    rows = ledger._tuples("EXPLAIN " + HISTORY_SELECT,
                          (address, "email", "acme", address, "acme", ALL_ORGS))
    return "; ".join(r[0].strip(" ->") for r in rows if "Scan" in r[0])


def bench_pg_lookup(work: Path, settings: config.Settings, source: Ledger, admin_url: str,
                    how: str, records: int, lookups: int, seed: int, keep: bool) -> dict:
    from gateway.ledger.postgres import PostgresLedger, redact
    from gateway.ledger.transfer import copy_ledger, count

    name, url = create_database(admin_url)
    try:
        total = sum(count(source, t) for t in ("evidence", "optouts", "decisions", "tokens"))
        started = time.perf_counter()
        if how == "cli":
            copy_with_cli(work, url)
            target = PostgresLedger(url)
        else:
            target = PostgresLedger(url, upgrade=True)  # what the CLI opens
            copy_ledger(source, target)
        copy_seconds = time.perf_counter() - started
        try:
            print(f"(b) PostgreSQL copy done ({copy_seconds:.1f} s); {common.load_note()}",
                  flush=True)
            started = time.perf_counter()
            for table in ("evidence", "optouts"):
                target._write(f"VACUUM (ANALYZE) {table}", ())
            vacuum_seconds = time.perf_counter() - started
            plan = history_plan(target)
            result = time_lookups(settings, target, records, lookups, seed)
            size = target._tuples("SELECT pg_database_size(current_database())")[0][0]
        finally:
            target.close()
    finally:
        if keep:
            print(f"    kept the PostgreSQL ledger at {redact(url)}")
        else:
            drop_database(admin_url, name)
    return {**result, "copied": total, "copy_seconds": copy_seconds,
            "copy_per_second": total / copy_seconds, "copy_how": how,
            "vacuum_seconds": vacuum_seconds, "plan": plan, "db_mb": size / 1e6}


# -- (c) CSV import ----------------------------------------------------------------------


def write_csv(path: Path, rows: int, seed: int) -> int:
    """`rows` evidence rows; returns how many are deliberately bad."""
    rng = random.Random(seed)
    bad = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["org", "channel", "address", "basis", "obtained_at", "source",
                    "categories", "context", "collected_by", "opt_out_offered", "named_orgs"])
        for n in range(rows):
            sms = n % 5 == 4
            address = phone_number(n // 5) if sms else email_address(n)
            if n % 1000 == 999:
                address, bad = ("07700 900123" if sms else f"person.{n}@@example.com"), bad + 1
            e = evidence(rng, n, address, "sms" if sms else "email")
            w.writerow([
                e.org, e.channel, address, e.basis,
                e.obtained_at.isoformat().replace("+00:00", "Z"), e.source,
                ";".join(e.categories), e.context or "", e.collected_by,
                "" if e.opt_out_offered is None else str(e.opt_out_offered).lower(),
                ";".join(e.named_orgs)])
    return bad


def bare_import(path: Path, ledger: Ledger) -> int:
    """The floor: parse the CSV and insert the cells as they are, nothing checked."""
    stored = 0
    recorded_at, via = now_iso(), f"csv:{path.name}"
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        while True:
            batch = [(*row, recorded_at, via) for _, row in zip(range(BATCH), reader)]
            if not batch:
                break
            ledger.conn.execute("BEGIN")
            ledger.conn.executemany(INSERT, batch)
            ledger.conn.execute("COMMIT")
            stored += len(batch)
    return stored


def bench_import(work: Path, rows: int, seed: int) -> dict:
    path = work / "evidence.csv"
    started = time.perf_counter()
    bad = write_csv(path, rows, seed)
    generate_seconds = time.perf_counter() - started

    base_ledger = Ledger(work / "bare")
    started = time.perf_counter()
    bare_stored = bare_import(path, base_ledger)
    bare_seconds = time.perf_counter() - started
    base_ledger.close()

    ledger = Ledger(work / "import")
    started = time.perf_counter()
    report = import_csv(path, ledger, {"acme": "GB"})
    seconds = time.perf_counter() - started
    ledger.close()
    assert report.rejected == bad, (report.rejected, bad, report.bad[:3])
    assert report.stored == rows - bad and bare_stored == rows
    return {"rows": rows, "stored": report.stored, "rejected": report.rejected,
            "seconds": seconds, "per_second": rows / seconds,
            "bare_seconds": bare_seconds, "bare_per_second": rows / bare_seconds,
            "ratio": seconds / bare_seconds, "generate_seconds": generate_seconds,
            "csv_mb": path.stat().st_size / 1e6}


# -- report ------------------------------------------------------------------------------


def pg_rows(pg: dict) -> list[list]:
    what = ("gateway ledger copy" if pg["copy_how"] == "cli" else "copy_ledger()")
    return [
        [f"(b) PostgreSQL: {what}, {pg['copied']:,} records",
         f"{pg['copy_per_second']:,.0f} records/s",
         f"{pg['copy_seconds']:.1f} s; then VACUUM ANALYZE {pg['vacuum_seconds']:.1f} s, "
         f"{pg['db_mb']:.0f} MB",
         "met" if pg["copy_seconds"] * 1_000_000 / pg["copied"] < 120
         else "MISSED (1M in < 2 min)"],
        [f"(b) PostgreSQL: evaluate() on it, {pg['lookups']:,} random addresses",
         f"p50 {pg['p50']:.3f} ms  p99 {pg['p99']:.3f} ms",
         f"p90 {pg['p90']:.3f}  max {pg['max']:.2f}  mean {pg['mean']:.3f} ms",
         "met" if pg["p99"] < 5.0 else "MISSED (p99 < 5 ms)"],
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--decisions", type=int, default=300_000, help="engine decisions")
    p.add_argument("--records", type=int, default=1_000_000, help="evidence in the ledger")
    p.add_argument("--lookups", type=int, default=20_000, help="timed decisions on it")
    p.add_argument("--import-rows", type=int, default=1_000_000, help="CSV rows imported")
    p.add_argument("--erasures", type=int, default=1000,
                   help="people erased for (s) (its ledger: (b)'s)")
    p.add_argument("--only", default="engine,lookup,suppression,import",
                   help="comma-separated parts to run (engine, lookup, import)")
    p.add_argument("--seed", type=int, default=20260205)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the databases and the CSV")
    p.add_argument("--pg-admin", metavar="URL", default=None,
                   help="also run (b) on PostgreSQL, in a fresh database created through URL "
                        "(postgresql://…; the role must be allowed to CREATE DATABASE)")
    p.add_argument("--pg-copy", choices=("cli", "function"), default="cli",
                   help="load it with `gateway ledger copy` (cli, the default) or by calling "
                        "copy_ledger in this process (function)")
    p.add_argument("--rulesets", action="store_true",
                   help="(b) with the org choosing a rule set per recipient")
    args = p.parse_args(argv)
    parts = {x.strip() for x in args.only.split(",") if x.strip()}

    root = args.work_dir or common.default_work_root()
    work = root / f"bench-core-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work} ({common.fs_type(work)}); {common.load_note()}", flush=True)
    rows: list[list] = []
    try:
        if "engine" in parts:
            e = bench_engine(args.decisions, args.seed)
            print(f"(a) engine done; {common.load_note()}", flush=True)
            rows.append(["(a) engine: decide() alone", f"{e['per_second']:,.0f} decisions/s",
                         f"{e['mean_us']:.1f} us mean over {e['decisions']:,}", ""])
            print("    outcome mix: " + ", ".join(f"{k} {v}" for k, v in
                                                  e["reasons"].most_common()))
        if "lookup" in parts:
            lk = bench_lookup(work, args.records, args.lookups, args.seed, args.pg_admin,
                              args.pg_copy, args.keep, args.rulesets,
                              args.erasures if "suppression" in parts else 0)
            print(f"(b) lookup done; {common.load_note()}", flush=True)
            rows.append([f"(b) ledger build: {lk['records']:,} records",
                         f"{lk['build_per_second']:,.0f} records/s",
                         f"{lk['build_seconds']:.1f} s, {lk['db_mb']:.0f} MB", ""])
            rows.append([f"(b) evaluate() on it, {lk['lookups']:,} random addresses",
                         f"p50 {lk['p50']:.3f} ms  p99 {lk['p99']:.3f} ms",
                         f"p90 {lk['p90']:.3f}  max {lk['max']:.2f}  mean {lk['mean']:.3f} ms",
                         "met" if lk["p99"] < 1.0 else "MISSED (p99 < 1 ms)"])
            print("    outcome mix: " + ", ".join(f"{k} {v}" for k, v in
                                                  lk["reasons"].most_common()))
            if "suppression" in lk:
                sp = lk["suppression"]
                for name in ("optout", "suppression"):
                    rows.append([f"(s) {name} lookup alone, {sp['lookups']:,} people",
                                 f"mean {sp[name]['mean']:.1f} us",
                                 f"p50 {sp[name]['p50']:.1f}  p99 {sp[name]['p99']:.1f} us",
                                 ""])
                rows.append([f"(s) suppression / opt-out ({sp['erasures']:,} erased)",
                             f"{sp['ratio']:.2f}x", "",
                             "met" if sp["ratio"] <= 1.2 else "MISSED (<= 1.2x)"])
                el = lk["erased_lookups"]
                rows.append([f"(s) evaluate() again, {sp['erasures']:,} people erased",
                             f"p50 {el['p50']:.3f} ms  p99 {el['p99']:.3f} ms",
                             f"mean {el['mean']:.3f} ms", ""])
            if "pg" in lk:
                rows.extend(pg_rows(lk["pg"]))
                print("    PostgreSQL outcome mix: " + ", ".join(
                    f"{k} {v}" for k, v in lk["pg"]["reasons"].most_common()))
                print(f"    PostgreSQL plan: {lk['pg']['plan']}")
        if "import" in parts:
            im = bench_import(work, args.import_rows, args.seed)
            print(f"(c) import done; {common.load_note()}", flush=True)
            rows.append([f"(c) import_csv: {im['rows']:,} rows ({im['csv_mb']:.0f} MB)",
                         f"{im['per_second']:,.0f} rows/s",
                         (f"{im['seconds']:.1f} s; {im['stored']:,} stored, "
                          f"{im['rejected']:,} rejected"),
                         "met" if im["per_second"] >= 20_000 else "MISSED (>= 20,000/s)"])
            rows.append(["(c) bare csv.reader + executemany",
                         f"{im['bare_per_second']:,.0f} rows/s", f"{im['bare_seconds']:.1f} s",
                         ""])
            rows.append(["(c) import_csv / bare (time)", f"{im['ratio']:.1f}x", "", ""])
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(common.table(["measure", "result", "detail", "target"], rows,
                       title=f"consent core, {os.cpu_count()} cores, {common.load_note()}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
