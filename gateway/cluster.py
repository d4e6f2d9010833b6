"""Gateways sharing a ledger announce themselves in it: each writes its row of `gateways`
(id, host, listen addresses, data_dir, version, spool depth and oldest copy, health) every
HEARTBEAT_SECONDS, so /status on any of them lists them all. A row whose heartbeat is older
than STALE_SECONDS is shown as stale (the gateway stopped or lost the ledger)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from . import __version__
from .errors import GatewayError
from .ledger import now_iso
from .logs import event
from .runtime import Runtime

log = logging.getLogger("gateway.cluster")

HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 3 * HEARTBEAT_SECONDS


def gateway_id(data_dir: Path) -> str:
    """This gateway's id: made once, kept in data_dir (one data_dir, one gateway)."""
    path = Path(data_dir) / "gateway-id"
    try:
        return path.read_text("ascii").strip()
    except FileNotFoundError:
        new = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new + "\n", "ascii")
        return new


class Announcer:
    """Keeps this gateway's row in the ledger fresh while it runs."""

    def __init__(self, rt: Runtime, spool_stats=None):
        self.rt = rt
        self.spool_stats = spool_stats  # () -> dict, over every spool of this data_dir
        self.id = gateway_id(rt.settings.gateway.data_dir)
        self.started_at = now_iso()
        self._task: asyncio.Task | None = None
        self._failing = False

    def entry(self, state: str = "running") -> dict:
        s = self.rt.settings
        spool = self.spool_stats() if self.spool_stats else {}
        health = {name: ("failing" if e.get("last_error", "") >= e.get("last_ok", "") and
                         e.get("last_error") else "ok") for name, e in self.rt.health.items()}
        return {"id": self.id, "host": socket.gethostname(), "smtp_listen": str(s.smtp.listen),
                "http_listen": str(s.http.listen), "data_dir": str(s.gateway.data_dir),
                "version": __version__, "started_at": self.started_at,
                "heartbeat_at": now_iso(), "spool_depth": spool.get("depth") or 0,
                "oldest_queued_at": spool.get("oldest_queued_at"),
                "health": json.dumps({"state": state, **health})}

    async def beat(self, state: str = "running") -> None:
        try:
            entry = await asyncio.to_thread(self.entry, state)
            await asyncio.to_thread(self.rt.ledger.announce, entry)
        except (GatewayError, OSError) as exc:
            if not self._failing:  # once per outage, not every beat
                event(log, "heartbeat_failed", logging.WARNING, error=str(exc))
            self._failing = True
            return
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def _run(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.beat("stopped")


def cluster_view(rows: list[dict], now: datetime | None = None) -> list[dict]:
    """The gateways table as /status shows it: each row with its state (running, stopped,
    or stale when its heartbeat is late) and its health."""
    now = now or datetime.now(UTC)
    out = []
    for r in rows:
        try:
            health = json.loads(r.get("health") or "{}")
        except ValueError:
            health = {}
        state = health.pop("state", "running")
        beat = datetime.fromisoformat(r["heartbeat_at"])
        if state == "running" and now - beat > timedelta(seconds=STALE_SECONDS):
            state = "stale"
        out.append({**r, "state": state, "health": health,
                    "heartbeat_age_seconds": round((now - beat).total_seconds())})
    return out
