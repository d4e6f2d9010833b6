"""The composition root: wires settings, ledger, HTTP, SMTP and delivery into one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self

from aiohttp import web

from .cluster import Announcer
from .config import Settings
from .ledger.spool import spool_stats
from .logs import event
from .runtime import Runtime
from .web import admin, openapi, ratelimit, signup
from .web import privacy as privacy_api
from .web.common import RUNTIME, answer_internal_errors

log = logging.getLogger("gateway.server")

# Each channel contributes a starter: (runtime, aiohttp app) -> async stop function.
Starter = Callable[[Runtime, web.Application], Awaitable[Callable[[], Awaitable[None]]]]


def build_http_app(rt: Runtime) -> web.Application:
    # Outermost: an unexpected error answers 503 with no internal detail.
    app = web.Application(client_max_size=2 * 1024 * 1024,
                          middlewares=[answer_internal_errors])
    app[RUNTIME] = rt
    app.add_routes(admin.routes)
    app.add_routes(openapi.routes)
    app.add_routes(privacy_api.routes)  # POST /api/v1/erasures
    app.add_routes(signup.routes)  # the double opt-in: /api/v1/subscriptions, /c/TOKEN
    ratelimit.install(app)  # per client: bad /u/ and /s/ links, bad admin credentials
    return app


def starters() -> list[Starter]:
    """The channels present in this build, in start order."""
    found: list[Starter] = []
    for module in ("gateway.web.pages", "gateway.sms.service", "gateway.mail.service",
                   "gateway.esp.service"):
        try:
            mod = __import__(module, fromlist=["start"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        found.append(mod.start)
    return found


def background(work: Awaitable[None], name: str) -> Callable[[], Awaitable[None]]:
    """Run `work` as a task until the gateway stops; the function that stops it."""
    task = asyncio.create_task(work, name=name)

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop


@dataclass
class RunningGateway:
    """A started gateway; `stop()` drains and closes everything."""

    runtime: Runtime
    http_runner: web.AppRunner
    stops: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def stop(self) -> None:
        """HTTP first (no new requests; those in flight finish), then each channel (SMTP:
        no new transactions, those in flight finish, delivery drains), then the stores."""
        await self.http_runner.cleanup()
        for stop in reversed(self.stops):
            await stop()
        self.runtime.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


async def start(settings: Settings, worker: int = 0, sockets: dict | None = None
                ) -> RunningGateway:
    """Start every part; the HTTP server last, so nothing is served half-ready. A worker
    process of several (see `supervisor`) serves on the `sockets` it was handed."""
    rt = Runtime.open(settings, worker, sockets)
    app = build_http_app(rt)
    stops = []
    try:
        for starter in starters():
            stops.append(await starter(rt, app))
        if worker == 0:  # one row per gateway, whatever its number of worker processes
            announcer = Announcer(rt, lambda: spool_stats(settings.gateway.data_dir))
            announcer.start()
            stops.append(announcer.stop)
        stops.append(background(rt.optouts.keep_replaying(), "opt-out-replay"))
        if worker == 0 and settings.privacy.decisions_retention:  # docs/privacy.md
            from .privacy.retention import Retention
            retention = Retention(rt.ledger, settings.privacy.decisions_retention)
            stops.append(background(retention.keep_deleting(), "decisions-retention"))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        listen = settings.http.listen
        if "http" in rt.sockets:
            await web.SockSite(runner, rt.sockets["http"]).start()
        else:
            await web.TCPSite(runner, listen.host, listen.port, reuse_address=True).start()
    except BaseException:
        for stop in reversed(stops):
            await stop()
        rt.close()
        raise
    event(log, "http_listening", listen=str(listen), public_url=settings.http.public_url)
    return RunningGateway(rt, runner, stops)


async def serve(settings: Settings, ready: Callable[[RunningGateway], None] | None = None,
                worker: int = 0, sockets: dict | None = None) -> None:
    """Run until SIGTERM/SIGINT, then stop accepting, drain, and return."""
    running = await start(settings, worker, sockets)
    if ready:
        ready(running)
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_event.set)
    # A worker process starts with them blocked (see supervisor): handled from here on.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    await stop_event.wait()
    event(log, "shutting_down")
    await running.stop()
    event(log, "stopped")
