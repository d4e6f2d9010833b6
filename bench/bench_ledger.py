"""The gateway on a PostgreSQL ledger against the same gateway on SQLite, in one run, with
the shared yardstick's load (`../shared/bench/gateway_vs_bare.py`: its config, its
evidence, its load clients, its bare baseline), rounds alternating which goes first.

    python bench/bench_ledger.py --pg-admin postgresql://postgres@127.0.0.1:5432/postgres

Each round runs the yardstick once with the default ledger and once with `[ledger] url`
set to a fresh PostgreSQL database; prints both gateways' throughput, the bare baseline
of each, and PostgreSQL ÷ SQLite, then the median over the rounds."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def yardstick(shared: Path):
    sys.path.insert(0, str(shared))
    import gateway_vs_bare  # noqa: PLC0415 - the shared bench, found at run time

    return gateway_vs_bare


def fresh_database(admin_url: str) -> str:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def one(gvb, what: str, ledger_url: str, gateway_bin: str, extra: list[str]) -> dict:
    """One yardstick run with `[ledger] url` set (or not); its results for `what`."""
    def with_ledger(text: str) -> str:
        return text + f'\n[ledger]\nurl = "{ledger_url}"\n' if ledger_url else text

    return run_yardstick(gvb, what, with_ledger, gateway_bin, extra)


def run_yardstick(gvb, what: str, edit, gateway_bin: str, extra: list[str]) -> dict:
    """One yardstick run, its gateway config passed through `edit(text) -> text`; its
    results for `what` (gateway and bare)."""
    original = gvb.write_config

    def write_config(tmp, ports, processes=None):
        path = original(tmp, ports, processes)
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(edit(text))
        return path

    gvb.write_config = write_config
    gvb.RESULTS = tempfile.mkdtemp(prefix="bench-variant-")
    sys.argv = ["gateway_vs_bare.py", "--project", str(REPO), "--gateway-bin", gateway_bin,
                "--what", what, "--runs", "1", *extra]
    try:
        gvb.main()
    finally:
        gvb.write_config = original
    with open(Path(gvb.RESULTS) / "gateway_vs_bare.json") as f:
        return json.load(f)["results"][what][0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg-admin", required=True,
                    help="a PostgreSQL URL allowed to CREATE DATABASE (each round gets one)")
    ap.add_argument("--what", choices=("smtp", "sms"), default="smtp")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shared-bench", type=Path, default=REPO.parent / "shared" / "bench")
    ap.add_argument("--gateway-bin", default=str(REPO / ".venv" / "bin" / "gateway"))
    ap.add_argument("--gw-processes", help="[gateway] processes for both gateways")
    args = ap.parse_args()
    gvb = yardstick(args.shared_bench)
    extra = ["--gw-processes", args.gw_processes] if args.gw_processes else []
    key = "e2e_msgs_per_s" if args.what == "smtp" else "rps"
    ratios = []
    for i in range(args.rounds):
        order = ["sqlite", "postgresql"] if i % 2 == 0 else ["postgresql", "sqlite"]
        got = {}
        for ledger in order:
            url = fresh_database(args.pg_admin) if ledger == "postgresql" else ""
            got[ledger] = one(gvb, args.what, url, args.gateway_bin, extra)
        s, p = got["sqlite"]["gateway"][key], got["postgresql"]["gateway"][key]
        ratio = p / s if s and p else None
        ratios.append(ratio)
        print(f"round {i + 1}: gateway on SQLite {s:.0f}/s (bare {got['sqlite']['bare'][key]:.0f}),"
              f" on PostgreSQL {p:.0f}/s (bare {got['postgresql']['bare'][key]:.0f}); "
              f"p99 {got['sqlite']['gateway']['p99_ms']:.0f} vs "
              f"{got['postgresql']['gateway']['p99_ms']:.0f} ms; PostgreSQL/SQLite "
              f"{ratio:.2f}" if ratio else "n/a", flush=True)
    done = [r for r in ratios if r]
    if done:
        print(f"{args.what}: PostgreSQL/SQLite median {statistics.median(done):.2f} "
              f"(lowest {min(done):.2f}, highest {max(done):.2f}) over {len(done)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
