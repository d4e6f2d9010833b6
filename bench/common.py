"""Helpers shared by the benchmark scripts: subprocesses, ports, /proc readings, tables.

Not a test module and not part of the `gateway` package; imported by bench_smtp.py and
bench_sms.py, which put this directory first on sys.path when run as scripts.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway_command() -> list[str]:
    """`gateway` from the venv this interpreter belongs to, else `python -m gateway.cli`."""
    script = Path(sys.executable).with_name("gateway")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "gateway.cli"]


def default_work_root() -> Path:
    """A place on the normal disk (not tmpfs): /var/tmp, else the bench directory."""
    for candidate in (Path("/var/tmp"), HERE / ".work"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            if fs_type(candidate) not in ("tmpfs", "ramfs"):
                return candidate
        except OSError:
            continue
    return HERE / ".work"


def fs_type(path: Path) -> str:
    """The file system type holding `path` (longest mount point prefix in /proc/mounts)."""
    path = path.resolve()
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1]
                if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) \
                        and len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


@dataclass
class Proc:
    """A benchmark subprocess with its output going to a log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; only this process, by its pid."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def spawn(name: str, cmd: list[str], log_dir: Path, env: dict | None = None,
          cwd: Path | None = None) -> Proc:
    log_path = log_dir / f"{name}.log"
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    if env:
        full_env.update(env)
    with open(log_path, "wb") as fh:
        popen = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=full_env,
                                 cwd=str(cwd) if cwd else None)
    return Proc(name, popen, log_path)


def wait_port(proc: Proc, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not listen on {port} within {timeout}s:\n{proc.tail()}")


def wait_http(proc: Proc, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready at {url} within {timeout}s:\n{proc.tail()}")


# -- /proc readings ----------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (a gateway's worker processes)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return found


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (kB) of a process and its descendants, summed (a gateway with
    several worker processes counts them all)."""
    out = {"VmRSS": 0, "VmHWM": 0}
    for one in descendants(pid):
        try:
            with open(f"/proc/{one}/status") as fh:
                for line in fh:
                    key, _, value = line.partition(":")
                    if key in out:
                        out[key] += int(value.split()[0])
        except OSError:
            pass
    return out


def pss_kb(pid: int) -> int:
    """Proportional set size (kB) of the process and its descendants: pages shared
    between them (a forked worker shares its parent's) counted once in all."""
    total = 0
    for one in descendants(pid):
        try:
            with open(f"/proc/{one}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def child_pid(pid: int) -> int:
    """The (first) child of `pid`, e.g. the program a profiler launched."""
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return int(fh.read().split()[0])


def reset_hwm(pid: int) -> bool:
    """Reset the peak RSS (VmHWM) of the process and its descendants to their current RSS
    (Linux >= 4.0)."""
    try:
        for one in descendants(pid):
            with open(f"/proc/{one}/clear_refs", "w") as fh:
                fh.write("5")
        return True
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process and its descendants (threads included)."""
    total = 0
    for one in descendants(pid):
        try:
            with open(f"/proc/{one}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def system_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


class CpuMeter:
    """CPU used during a phase: by each of our processes and by the machine as a whole
    (the difference is what other programs took: the noise)."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.start_own = {n: cpu_seconds(p) for n, p in pids.items()}
        self.start_own["bench-client"] = time.process_time()
        self.start_sys = system_cpu()
        self.start = time.monotonic()

    def stop(self) -> dict:
        wall = time.monotonic() - self.start
        own = {n: cpu_seconds(p) - self.start_own[n] for n, p in self.pids.items()}
        own["bench-client"] = time.process_time() - self.start_own["bench-client"]
        busy, total = system_cpu()
        sys_busy = busy - self.start_sys[0]
        sys_total = total - self.start_sys[1]
        cores = os.cpu_count() or 1
        ours = sum(own.values())
        return {
            "wall": wall,
            "own": own,
            "machine_busy_pct": 100.0 * sys_busy / sys_total if sys_total else 0.0,
            "others_cores": max(0.0, sys_busy - ours) / wall if wall else 0.0,
            "cores": cores,
        }


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def busiest_others(limit: int = 5, exclude: set[int] | None = None) -> list[tuple[str, float]]:
    """Other processes by CPU use over a short sample (to say what the noise was)."""
    exclude = exclude or set()

    def snapshot() -> dict[int, tuple[str, float]]:
        snap = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in exclude:
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
                snap[int(entry)] = (cmd[:70] or "?", cpu_seconds(int(entry)))
            except OSError:
                continue
        return snap

    a = snapshot()
    time.sleep(1.0)
    b = snapshot()
    usage = [(b[p][0], b[p][1] - a[p][1]) for p in b if p in a and b[p][1] > a[p][1]]
    return sorted(usage, key=lambda x: -x[1])[:limit]


# -- statistics and tables ------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(p / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def ratio_summary(what: str, ratios: list[float], target: float = 0.7) -> tuple[str, bool]:
    """One line on the rounds' ratios, and whether their median meets `target`. One round
    on a shared machine moves with whatever else the host runs (the bare baseline's own rate
    varies by a fifth between rounds here); the median of several is the figure to judge,
    the lowest round is shown beside it."""
    if not ratios:
        return f"{what}: no rounds", False
    ordered = sorted(ratios)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    ok = median >= target
    return (f"{what}: median {median:.2f} over {len(ratios)} round(s) (lowest {ordered[0]:.2f}, "
            f"highest {ordered[-1]:.2f}); target >= {target:.2f}x: {'PASS' if ok else 'FAIL'}"
            + ("" if ordered[0] >= target else f"; {sum(r < target for r in ratios)} round(s) "
               "below it"), ok)


def table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                         enumerate(zip(r, widths)))

    out = []
    if title:
        out.append(title)
    out.append(line(cells[0]))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells[1:])
    return "\n".join(out)


def mb(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def spawn_gateway(config: Path, work: Path, log_level: str, profile: str | None) -> Proc:
    """`gateway run --config CONFIG`, under py-spy (every process of it; the collapsed
    stacks go to gateway.pyspy.txt in `work`) when `profile` names its binary."""
    cmd = gateway_command() + ["run", "--config", str(config), "--log-level", log_level]
    if profile:
        cmd = [profile, "record", "--format", "raw", "--rate", "200", "--threads", "--gil",
               "--subprocesses", "-o", str(work / "gateway.pyspy.txt"), "--"] + cmd
    return spawn("gateway", cmd, work, cwd=work)


def measured_pid(gateway: Proc, profile: str | None) -> int:
    """The gateway's own pid (under py-spy, the profiler's child)."""
    return child_pid(gateway.pid) if profile else gateway.pid


def stop_all(procs: list[Proc], profiled: int | None, work: Path, keep: bool) -> None:
    """Stop every process (a profiled gateway first, by pid: py-spy writes its output once
    the gateway has exited), then remove `work` unless kept."""
    if profiled is not None:
        try:
            os.kill(profiled, signal.SIGTERM)
            procs[-1].popen.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    for p in reversed(procs):
        code = p.stop()
        if p.name == "gateway" and code not in (0, None):
            print(f"gateway exited {code}; log tail:\n{p.tail()}")
    if keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def add_run_options(ap, roles: tuple[str, ...], bare: str) -> None:
    """Options every gateway-vs-bare bench shares: processes on each side, where the work
    goes, logging, profiling, and the hidden ones its own subprocesses are started with."""
    import argparse

    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                    help="gateway [gateway] processes (default: one per core, as "
                         "processes = \"auto\" gives; the gateway's own default is 1)")
    ap.add_argument("--bare-processes", type=int, default=1,
                    help=f"processes of the bare {bare}, sharing its port (1: the plain one)")
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="where data and logs go (default: a new dir under /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--log-level", default="INFO", help="gateway --log-level (INFO)")
    ap.add_argument("--profile", metavar="PY_SPY", default=None,
                    help="run the gateway under this py-spy binary; the collapsed stacks "
                         "go to gateway.pyspy.txt in the work dir (implies --keep)")
    ap.add_argument("--role", choices=roles, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port2", type=int, help=argparse.SUPPRESS)
