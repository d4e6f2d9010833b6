"""The gateway on uvloop against the same gateway on asyncio's own loop, in one run, with
the shared yardstick's load (`../shared/bench/gateway_vs_bare.py`), rounds alternating
which goes first; each run has its bare baseline too.

    python bench/bench_event_loop.py --what smtp --rounds 3

Prints, per round, each loop's throughput, CPU per message and its ratio to the bare
baseline of the same run, then the medians."""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from bench_ledger import REPO, run_yardstick, yardstick

LOOPS = ("asyncio", "uvloop")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--what", choices=("smtp", "sms"), default="smtp")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shared-bench", type=Path, default=REPO.parent / "shared" / "bench")
    ap.add_argument("--gateway-bin", default=str(REPO / ".venv" / "bin" / "gateway"))
    ap.add_argument("--gw-processes", help="[gateway] processes for both gateways")
    args = ap.parse_args()
    gvb = yardstick(args.shared_bench)
    extra = ["--gw-processes", args.gw_processes] if args.gw_processes else []
    key = "e2e_msgs_per_s" if args.what == "smtp" else "rps"
    cpu_key = "front_cpu_ms_per_msg" if args.what == "smtp" else "front_cpu_ms_per_req"
    seen: dict[str, dict[str, list[float]]] = {loop: {"ratio": [], "cpu": [], "rate": []}
                                                for loop in LOOPS}
    for i in range(args.rounds):
        order = LOOPS if i % 2 == 0 else LOOPS[::-1]
        for loop in order:
            def edit(text: str, loop: str = loop) -> str:
                return text.replace("[gateway]\n", f'[gateway]\nevent_loop = "{loop}"\n', 1)

            got = run_yardstick(gvb, args.what, edit, args.gateway_bin, extra)
            gw, bare = got["gateway"], got["bare"]
            ratio = gw[key] / bare[key] if bare[key] else 0.0
            seen[loop]["ratio"].append(ratio)
            seen[loop]["rate"].append(gw[key])
            seen[loop]["cpu"].append(gw.get(cpu_key) or 0.0)
            print(f"round {i + 1} {loop:8s}: {gw[key]:.0f}/s vs bare {bare[key]:.0f}/s "
                  f"(ratio {ratio:.2f}), CPU {gw.get(cpu_key) or 0:.2f} ms, "
                  f"p99 {gw['p99_ms']:.0f} ms", flush=True)
    for loop in LOOPS:
        s = seen[loop]
        print(f"{args.what} {loop}: gateway/bare median {statistics.median(s['ratio']):.2f}, "
              f"CPU median {statistics.median(s['cpu']):.2f} ms per "
              f"{'message' if args.what == 'smtp' else 'request'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
