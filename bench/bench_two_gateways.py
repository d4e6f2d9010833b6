"""Two gateways on one PostgreSQL ledger against one, in one run: does a second gateway
add throughput? The shared yardstick's config, evidence and load client
(`../shared/bench`: gateway_vs_bare.write_config, its evidence, smtp_load.py), one SMTP
sink; rounds alternate which setup goes first.

    python bench/bench_two_gateways.py --pg-admin postgresql://postgres@127.0.0.1:5432/postgres

One gateway gets all the load (-c connections, -n messages); two gateways get half each,
at the same time. Prints accepted msg/s (messages ÷ the slowest client's time) and p99
for each setup, and two ÷ one."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ledger import fresh_database, yardstick  # noqa: E402 - beside this script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


class Gateways:
    """`n` gateways on one ledger, each with its own ports and data_dir."""

    def __init__(self, gvb, n: int, ledger_url: str, sink_port: int, gateway_bin: str):
        self.gvb, self.procs, self.ports, self.tmps = gvb, [], [], []
        for _ in range(n):
            tmp = tempfile.mkdtemp(prefix="two-gw-")
            ports = {"sink": sink_port, "gw_smtp": free_port(), "gw_http": free_port(),
                     "stub": free_port()}
            cfg = gvb.write_config(tmp, ports)
            with open(cfg, "a") as f:
                f.write(f'\n[ledger]\nurl = "{ledger_url}"\n')
            log = open(os.path.join(tmp, "gateway.log"), "w")  # noqa: SIM115 - closed with the process
            proc = subprocess.Popen([gateway_bin, "run", "--config", cfg], cwd=tmp,
                                    stdout=log, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            self.ports.append(ports)
            self.tmps.append((tmp, cfg))
        for proc, ports in zip(self.procs, self.ports):
            wait_listening(ports["gw_smtp"], proc)
            wait_listening(ports["gw_http"], proc)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for tmp, _ in self.tmps:
            shutil.rmtree(tmp, ignore_errors=True)


def load(shared: Path, port: int, conns: int, messages: int, rcpt_count: int, gvb
         ) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(shared / "smtp_load.py"), "--port", str(port), "-c", str(conns),
         "-n", str(messages), "--json", "--user", gvb.SMTP_USER, "--password", gvb.SMTP_PASS,
         "--rcpt-pattern", gvb.RCPT_PATTERN, "--rcpt-count", str(rcpt_count)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(gvb, args, n: int, sink_port: int) -> dict:
    url = fresh_database(args.pg_admin)
    gws = Gateways(gvb, n, url, sink_port, args.gateway_bin)
    try:
        tmp, cfg = gws.tmps[0]
        recs = gvb.evidence(argparse.Namespace(rcpt_count=args.rcpt_count))
        if not gvb.seed_cli(args.gateway_bin, tmp, cfg, recs):
            raise RuntimeError("evidence import failed")
        clients = [load(args.shared_bench, p["gw_smtp"], args.conns // n, args.messages // n,
                        args.rcpt_count, gvb) for p in gws.ports]
        results = []
        for c in clients:
            out, err = c.communicate(timeout=600)
            if c.returncode != 0:
                raise RuntimeError(f"smtp_load failed: {err.strip()[-500:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        gws.stop()
    # From the first client's first send to the last client's last reply.
    span = max(r["end_ts"] for r in results) - min(r["start_ts"] for r in results)
    return {"msgs_per_s": sum(r["sent"] for r in results) / span,
            "p99_ms": max(r["p99_ms"] or 0 for r in results),
            "errors": sum(r.get("errors", 0) for r in results)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg-admin", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-c", "--conns", type=int, default=50)
    ap.add_argument("-n", "--messages", type=int, default=3000)
    ap.add_argument("--rcpt-count", type=int, default=200)
    ap.add_argument("--shared-bench", type=Path, default=REPO.parent / "shared" / "bench")
    ap.add_argument("--gateway-bin", default=str(REPO / ".venv" / "bin" / "gateway"))
    args = ap.parse_args()
    gvb = yardstick(args.shared_bench)
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, str(args.shared_bench / "sink_smtp.py"),
                             "--port", str(sink_port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ratios = []
    try:
        for i in range(args.rounds):
            got = {}
            for n in ((1, 2) if i % 2 == 0 else (2, 1)):
                got[n] = run(gvb, args, n, sink_port)
            ratio = got[2]["msgs_per_s"] / got[1]["msgs_per_s"]
            ratios.append(ratio)
            print(f"round {i + 1}: one gateway {got[1]['msgs_per_s']:.0f} msg/s (p99 "
                  f"{got[1]['p99_ms']:.0f} ms), two {got[2]['msgs_per_s']:.0f} msg/s (p99 "
                  f"{got[2]['p99_ms']:.0f} ms); two/one {ratio:.2f}; errors "
                  f"{got[1]['errors']}/{got[2]['errors']}", flush=True)
    finally:
        sink.terminate()
    print(f"two gateways / one on one PostgreSQL: median {statistics.median(ratios):.2f} "
          f"(lowest {min(ratios):.2f}, highest {max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
