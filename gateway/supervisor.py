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

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import eventloop, logs
from .config import Listen, Settings
from .logs import event

# Read by prometheus_client when first imported: set before anything imports it.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger("gateway.supervisor")

PORT_WAIT = 3.0  # seconds a port in use may take to come free (workers of a killed run)
STOP_GRACE = 60.0  # seconds the workers get to drain after SIGTERM, then SIGKILL
START_TIMEOUT = 60.0  # seconds every worker gets to start serving
QUICK_EXIT = 10.0  # a worker that dies this soon after it started...
MAX_QUICK_EXITS = 5  # ...this many times in a row: give up
CANNOT_START = 3  # a worker's exit code for "restarting cannot help" (as EXIT_CONFIG)
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
    deadline = time.monotonic() + PORT_WAIT
    while True:
        try:
            socket.create_server((listen.host, listen.port), family=family).close()
            break
        except OSError as exc:
            # Restarted right after a crash, the old workers may still be dying.
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return [bind(listen) for _ in range(count)]


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the supervisor goes, however it goes."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it went before prctl took effect
        os._exit(1)


def _worker(settings: Settings, index: int, sockets: dict, parent: int, ready_fd: int) -> int:
    _die_with_parent(parent)  # first: a supervisor killed now must not leave us behind
    from . import server
    from .ledger.spool import SpoolBusy

    logs.tag_worker(index)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)

    def ready(_running) -> None:
        os.write(ready_fd, b"r")

    try:
        eventloop.run(server.serve(settings, ready, worker=index, sockets=sockets),
                      settings.gateway.event_loop)
    except SpoolBusy as exc:  # another gateway on this data_dir: restarting cannot help
        event(log, "worker_cannot_start", logging.ERROR, worker=index, error=str(exc))
        return CANNOT_START
    except BaseException:  # noqa: BLE001 - the worker's last words, then its exit code
        event(log, "worker_failed", logging.ERROR, worker=index,
              error=traceback.format_exc(limit=8).strip().replace("\n", " | "))
        return 1
    return 0


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _spawn(settings: Settings, index: int, sockets: dict, ready_fd: int) -> int:
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    # The worker starts with SIGTERM/SIGINT blocked: one arriving before its event loop
    # handles them stays pending (server.serve unblocks them), instead of running the
    # supervisor's handler inherited through fork.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    pid = os.fork()
    if pid != 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    if pid == 0:  # the worker: never returns into the supervisor's code
        code = 1
        try:
            code = _worker(settings, index, sockets, parent, ready_fd)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    event(log, "worker_started", worker=index, pid=pid)
    return pid


class _Supervisor:
    def __init__(self, settings: Settings, metrics_dir: str):
        from prometheus_client import multiprocess

        self.settings = settings
        self.count = settings.gateway.processes
        self.metrics_dir = metrics_dir
        self.mark_dead = multiprocess.mark_process_dead
        self.sockets: list[dict[str, socket.socket]] = []
        self.ready_r, self.ready_w = os.pipe()
        os.set_blocking(self.ready_r, False)
        self.workers: dict[int, tuple[int, float]] = {}  # pid -> (index, started at)
        self.stopping: list[float] = []  # the deadline, once asked to stop
        self.status = 0

    def spawn(self, index: int) -> None:
        pid = _spawn(self.settings, index, self.sockets[index], self.ready_w)
        self.workers[pid] = (index, time.monotonic())
        if self.stopping:  # asked to stop while forking: this one was not told yet
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def stop(self, signum=signal.SIGTERM, _frame=None) -> None:
        if not self.stopping:
            event(log, "shutting_down", signal=signal.Signals(signum).name,
                  workers=len(self.workers))
            self.stopping.append(time.monotonic() + STOP_GRACE)
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def readies(self) -> int:
        try:
            return len(os.read(self.ready_r, 4096))
        except BlockingIOError:
            return 0

    def reap(self) -> tuple[int, int, int, float] | None:
        """A worker that ended: (pid, index, exit code, seconds it lived), or None;
        SIGKILLs the workers still running once the stop deadline has passed."""
        pid, code = os.waitpid(-1, os.WNOHANG)
        if pid == 0 or pid not in self.workers:
            if self.stopping and time.monotonic() > self.stopping[0]:
                for other in self.workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(other, signal.SIGKILL)
            return None
        index, started = self.workers.pop(pid)
        self.mark_dead(pid, self.metrics_dir)
        return pid, index, os.waitstatus_to_exitcode(code), time.monotonic() - started

    def bind(self) -> None:
        """Bound before any worker starts, and kept: a worker that is replaced takes over
        its sockets, with the connections that arrived meanwhile still queued."""
        smtp = bind_all(self.settings.smtp.listen, self.count)
        http = bind_all(self.settings.http.listen, self.count)
        self.sockets = [{"smtp": smtp[k], "http": http[k]} for k in range(self.count)]

    def start(self) -> bool:
        """Start every worker and wait until each serves; False when one cannot start
        (then the others are stopped and `status` says why)."""
        for index in range(self.count):
            if self.stopping:
                return False
            self.spawn(index)
        ready = 0
        deadline = time.monotonic() + START_TIMEOUT
        while ready < self.count and not self.stopping:
            ready += self.readies()
            ended = self.reap()
            if ended is not None:
                pid, index, code, _ = ended
                event(log, "worker_died", logging.ERROR, worker=index, pid=pid, exit=code)
                self.status = code if code > 0 else 1
                self.stop()
                return False
            if time.monotonic() > deadline:
                event(log, "start_timeout", logging.ERROR, seconds=START_TIMEOUT)
                self.status = 1
                self.stop()
                return False
            time.sleep(0.02)
        return not self.stopping

    def supervise(self) -> None:
        quick_exits = 0
        while self.workers:
            self.readies()
            ended = self.reap()
            if ended is None:
                time.sleep(0.1)
                continue
            pid, index, code, lived = ended
            if self.stopping:
                event(log, "worker_stopped", worker=index, pid=pid, exit=code)
                continue
            event(log, "worker_died", logging.ERROR, worker=index, pid=pid, exit=code)
            if code == CANNOT_START:
                self.status = code
                self.stop()
                continue
            quick_exits = quick_exits + 1 if lived < QUICK_EXIT else 1
            if quick_exits >= MAX_QUICK_EXITS:
                event(log, "giving_up", logging.ERROR, worker=index,
                      reason=f"{quick_exits} workers in a row died within "
                             f"{QUICK_EXIT:.0f} s of starting")
                self.status = 1
                self.stop()
                continue
            time.sleep(min(5.0, 0.2 * 2 ** quick_exits))
            self.spawn(index)

    def close(self) -> None:
        for own in self.sockets:
            for sock in own.values():
                sock.close()
        os.close(self.ready_r)
        os.close(self.ready_w)


def _remove_stale_metrics() -> None:
    """Metrics directories of supervisors that are gone (killed before they could remove
    their own): `gateway-metrics-PID-*` whose PID no longer runs."""
    for path in Path(tempfile.gettempdir()).glob("gateway-metrics-*-*"):
        pid = path.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def run(settings: Settings, describe) -> int:
    """Supervise `settings.gateway.processes` workers until SIGTERM/SIGINT; the exit code."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the supervisor set "
                           f"{MULTIPROC_ENV}: workers' metrics would not add up")
    _remove_stale_metrics()
    metrics_dir = tempfile.mkdtemp(prefix=f"gateway-metrics-{os.getpid()}-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    from .ledger import open_ledger

    try:
        # The schema (and the WAL) made once, before the workers race for it.
        open_ledger(settings.ledger.url, settings.gateway.data_dir).close()
        supervisor = _Supervisor(settings, metrics_dir)
        signal.signal(signal.SIGTERM, supervisor.stop)  # before the ports open
        signal.signal(signal.SIGINT, supervisor.stop)
        try:
            supervisor.bind()
            if not supervisor.stopping and supervisor.start():
                describe(supervisor.count)
            supervisor.supervise()
        finally:
            supervisor.close()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    event(log, "stopped", exit=supervisor.status)
    return supervisor.status
