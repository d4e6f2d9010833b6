"""`[privacy] decisions_retention`: decisions older than it are deleted, hourly, in small
batches (each its own short transaction, a pause between two) so mail and texts keep
flowing meanwhile. Evidence, opt-outs and erasures are never deleted by it."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from ..errors import StoreUnavailable
from ..logs import event

log = logging.getLogger("gateway.privacy")

EVERY_SECONDS = 3600.0
FIRST_AFTER_SECONDS = 60.0  # not at start-up itself, which is busy enough
BATCH = 500  # rows per transaction: a few milliseconds of the write lock
PAUSE_SECONDS = 0.05  # between two batches: the hot paths' writes go first


class Retention:
    """Deletes the decisions older than `seconds` from `ledger` (0: never)."""

    def __init__(self, ledger, seconds: int, batch: int = BATCH,
                 pause: float = PAUSE_SECONDS):
        self.ledger = ledger
        self.seconds = seconds
        self.batch = batch
        self.pause = pause

    def cutoff(self, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        return (now - timedelta(seconds=self.seconds)).isoformat(timespec="microseconds")

    async def run_once(self, now: datetime | None = None) -> int:
        """Delete every decision older than the retention, batch by batch; how many."""
        if not self.seconds:
            return 0
        before, deleted = self.cutoff(now), 0
        while True:
            n = await asyncio.to_thread(self.ledger.delete_decisions_before, before, self.batch)
            deleted += n
            if n < self.batch:
                break
            await asyncio.sleep(self.pause)
        if deleted:
            event(log, "decisions_deleted", count=deleted, before=before)
        return deleted

    async def keep_deleting(self, first: float = FIRST_AFTER_SECONDS,
                            every: float = EVERY_SECONDS) -> None:
        """While the gateway runs: `run_once` after `first` seconds, then every `every`."""
        await asyncio.sleep(first)
        while True:
            try:
                await self.run_once()
            except StoreUnavailable as exc:  # the ledger is away: next hour, then
                event(log, "retention_failed", logging.WARNING, error=str(exc)[:200])
            await asyncio.sleep(every)
