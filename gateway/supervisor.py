"""`gateway run` with several worker processes (`[gateway] processes`): one core each.

The gateway's hot paths are Python on one event loop, so one process uses one core. With
`processes = N` the supervisor (this module, the process `gateway run` started) binds the
SMTP and HTTP listening sockets, one pair per worker on the same ports (SO_REUSEPORT), then
forks N workers; each runs the whole gateway (`server.serve`) on its pair, and the kernel
spreads new connections over the workers.

What the workers share and what they don't:

- the ledger (SQLite in WAL mode): reads never wait; writes take turns. Every decision,
  token and opt-out lands in the one ledger, so /status and the audit see them all;
- each worker has its own spool file (worker 0 `spool.db`, worker k `spool-k.db`, each
  locked by its owner), so no copy can be delivered by two workers; when `processes` goes
  down, worker 0 takes over the queued copies of the spools left without a worker;
- metrics: prometheus_client's multiprocess mode (a directory of value files made here,
  removed at exit), so /metrics sums every worker's counters whichever worker answers;
- per-process only: the bad-link rate limiter, and the last upstream/provider error shown
  on /status (each worker reports what it saw).

The supervisor restarts a worker that dies (what it had spooled is delivered when it is
back), forwards SIGTERM/SIGINT to every worker and waits for them to drain. Workers die
with the supervisor (PR_SET_PDEATHSIG): a `kill -9` of `gateway run` stops them all, as it
would a single process, and a restart delivers whatever was spooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback

from . import logs
from .config import Listen, Settings
from .logs import event

# Read by prometheus_client when first imported: set before anything imports it.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger("gateway.supervisor")

STOP_GRACE = 60.0  # seconds the workers get to drain after SIGTERM, then SIGKILL
QUICK_EXIT = 10.0  # a worker that dies this soon after starting...
MAX_QUICK_EXITS = 5  # ...this many times in a row: give up (it cannot start)
PR_SET_PDEATHSIG = 1


def bind(listen: Listen) -> socket.socket:
    """One worker's listening socket: SO_REUSEPORT, so every worker has its own and the
    kernel spreads new connections over them (a shared socket would let whichever
    worker wakes first take a whole burst of connections)."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.create_server((listen.host, listen.port), family=family, backlog=1024,
                                reuse_port=True)
    sock.set_inheritable(True)
    return sock


def bind_all(listen: Listen, count: int) -> list[socket.socket]:
    """`count` sockets for `listen`; first a plain bind, so that a port some other
    program (or gateway) listens on is an error here, not a port silently shared."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    socket.create_server((listen.host, listen.port), family=family).close()
    return [bind(listen) for _ in range(count)]


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the supervisor goes, however it goes."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it went before prctl took effect
        os._exit(1)


def _worker(settings: Settings, index: int, sockets: dict, parent: int) -> int:
    from . import server

    _die_with_parent(parent)
    logs.tag_worker(index)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    try:
        asyncio.run(server.serve(settings, None, worker=index, sockets=sockets))
    except BaseException:  # noqa: BLE001 - the worker's last words, then its exit code
        event(log, "worker_failed", logging.ERROR, worker=index,
              error=traceback.format_exc(limit=8).strip().replace("\n", " | "))
        return 1
    return 0


def _spawn(settings: Settings, index: int, sockets: dict) -> int:
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the worker: never returns into the supervisor's code
        code = 1
        try:
            code = _worker(settings, index, sockets, parent)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    event(log, "worker_started", worker=index, pid=pid)
    return pid


def run(settings: Settings, ready) -> int:
    """Supervise `settings.gateway.processes` workers until SIGTERM/SIGINT; the exit code."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the supervisor set "
                           f"{MULTIPROC_ENV}: workers' metrics would not add up")
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    from prometheus_client import multiprocess

    from .ledger import Ledger

    count = settings.gateway.processes
    Ledger(settings.gateway.data_dir).close()  # schema and WAL made once, before the race
    # Bound here, before any worker starts, and kept: a worker that is replaced takes over
    # its sockets, with the connections that arrived meanwhile still in their queues.
    smtp, http = bind_all(settings.smtp.listen, count), bind_all(settings.http.listen, count)
    sockets = [{"smtp": smtp[k], "http": http[k]} for k in range(count)]
    workers: dict[int, tuple[int, float]] = {}  # pid -> (index, started at)
    stopping: list[float] = []  # the deadline, once asked to stop

    def stop(signum, _frame) -> None:
        if not stopping:
            event(log, "shutting_down", signal=signal.Signals(signum).name, workers=len(workers))
            stopping.append(time.monotonic() + STOP_GRACE)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    quick_exits = 0
    status = 0
    try:
        for index in range(count):
            workers[_spawn(settings, index, sockets[index])] = (index, time.monotonic())
        ready(count)
        while workers:
            pid, code = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if stopping and time.monotonic() > stopping[0]:
                    for other in workers:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(other, signal.SIGKILL)
                time.sleep(0.1)
                continue
            if pid not in workers:
                continue
            index, started = workers.pop(pid)
            multiprocess.mark_process_dead(pid, metrics_dir)
            exit_code = os.waitstatus_to_exitcode(code)
            if stopping:
                event(log, "worker_stopped", worker=index, pid=pid, exit=exit_code)
                continue
            event(log, "worker_died", logging.ERROR, worker=index, pid=pid, exit=exit_code)
            quick_exits = quick_exits + 1 if time.monotonic() - started < QUICK_EXIT else 0
            if quick_exits >= MAX_QUICK_EXITS:
                event(log, "giving_up", logging.ERROR, worker=index,
                      reason=f"{quick_exits} workers in a row died within {QUICK_EXIT:.0f} s")
                status = 1
                stop(signal.SIGTERM, None)
                continue
            time.sleep(min(5.0, 0.2 * 2 ** quick_exits))
            workers[_spawn(settings, index, sockets[index])] = (index, time.monotonic())
    finally:
        for own in sockets:
            for sock in own.values():
                sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    event(log, "stopped")
    return status
