"""Delivery workers: take due copies from the spool, send them upstream, retry with
exponential back-off and jitter, bounce to the sender on permanent failure or max_age."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable

from ..addresses import normalise_email
from ..consent import Classification, classify
from ..errors import GatewayError, StoreUnavailable
from ..ledger.spool import Copy, Finish, Marketing, QueuedCopy, Spool
from ..ledger.writer import Writes
from ..logs import event
from ..policy import Decision
from ..runtime import Runtime
from .dsn import Failure, build_dsn, erased_notice
from .headers import header_value
from .upstream import PermanentFailure, TemporaryFailure, make_upstream

log = logging.getLogger("gateway.delivery")

# Bytes of copies being sent at once (each send holds about three times its copy while
# the SMTP client normalises and dot-stuffs it). A bigger copy goes alone.
BYTES_IN_FLIGHT = 64 << 20
SMALL_COPY = 256 << 10  # copies below this size don't count against it


class ByteBudget:
    """An asyncio semaphore counted in bytes; an amount above the whole budget waits until
    nothing else is in flight, then goes alone."""

    def __init__(self, total: int):
        self.total = total
        self.used = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def take(self, amount: int):
        amount = min(amount, self.total)
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + amount <= self.total)
            self.used += amount
        try:
            yield
        finally:
            async with self._changed:
                self.used -= amount
                self._changed.notify_all()


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """initial·2^attempts capped at maximum, ±20 % jitter so retries don't stampede."""
    delay = min(maximum, initial * (2 ** min(attempts, 30)))
    return delay * random.uniform(0.8, 1.2)


class Delivery:
    """A dispatcher feeding N workers from the spool; `wake()` after spooling for prompt
    delivery. The spool is the only hand-off: the dispatcher `take`s due copies from it,
    and what is taken stays so until the attempt's outcome is written there."""

    def __init__(self, rt: Runtime, spool: Spool):
        self.rt = rt
        self.spool = spool
        self.settings = rt.settings.delivery
        self.queue: asyncio.Queue[QueuedCopy] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._stopping = False
        # More is due than the queue took: a worker that finishes wakes the dispatcher.
        self._backlog = False
        self._tasks: list[asyncio.Task] = []
        self.budget = ByteBudget(BYTES_IN_FLIGHT)
        self.upstreams = [make_upstream(self.settings.upstream, rt.settings.smtp.hostname,
                                        self.settings.timeout, rt.worker)
                          for _ in range(self.settings.workers)]

    def wake(self) -> None:
        """New work is in the spool (committed): read it now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._dispatch(), name="delivery-dispatch"))
        for i, upstream in enumerate(self.upstreams):
            self._tasks.append(asyncio.create_task(self._work(upstream), name=f"delivery-{i}"))

    async def stop(self, grace: float = 20.0) -> None:
        """Stop taking new work; let copies in flight finish (or stay queued for the
        next start: the spool still holds them)."""
        self._stopping = True
        self._wake.set()
        dispatcher, workers = self._tasks[0], self._tasks[1:]
        dispatcher.cancel()
        while not self.queue.empty():  # not started: stays queued in the spool
            self.spool.release([self.queue.get_nowait().id])
        for _ in workers:
            self.queue.put_nowait(None)  # type: ignore[arg-type]
        _, pending = await asyncio.wait(workers, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(dispatcher, *workers, return_exceptions=True)
        for upstream in self.upstreams:
            await upstream.close()

    async def _dispatch(self) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self.settings.workers * 2 - self.queue.qsize()
            try:
                # One thread hop for both reads.
                due, next_at = await asyncio.to_thread(self._read_spool, max(free, 0))
            except Exception as exc:  # noqa: BLE001 - keep dispatching; log it
                event(log, "spool_read_failed", logging.ERROR, error=str(exc))
                due, next_at = [], None
            self._backlog = free <= 0 or len(due) >= free
            for item in due:
                self.queue.put_nowait(item)
            self.rt.metrics.spool_depth.set(self.spool.taken)
            wait = 1.0 if next_at is None else max(0.05, min(1.0, next_at - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    def _read_spool(self, limit: int) -> tuple[list[QueuedCopy], float | None]:
        return (self.spool.take(limit) if limit else []), self.spool.next_due_at()

    async def _work(self, upstream) -> None:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            try:
                await self._deliver(upstream, item)
            except Exception as exc:  # noqa: BLE001 - the copy stays queued; log and go on
                event(log, "delivery_crashed", logging.ERROR, spool_id=item.id, error=repr(exc))
                self.spool.release([item.id])  # due again: tried at the next read
            finally:
                if self._backlog and self.queue.qsize() < self.settings.workers:
                    self._wake.set()  # keep a backlog flowing without waiting for a poll

    async def _deliver(self, upstream, item: QueuedCopy) -> None:
        """One attempt, and its outcome in the spool. A marketing copy is decided again
        first, against the ledger as it is now: a block drops it."""
        metrics = self.rt.metrics.delivery_attempts
        try:
            blocked = self._decide_again(item)
        except GatewayError as exc:  # fail closed: not now; maybe at the next attempt
            event(log, "redecision_failed", logging.ERROR, spool_id=item.id, error=repr(exc))
            await self._defer(item, "consent could not be checked again before delivery")
            return
        if blocked is not None:
            metrics.labels("blocked").inc()
            await self._drop_blocked(item, *blocked)
            return
        try:
            if len(item.copy.data) < SMALL_COPY:  # the usual case: no bookkeeping
                detail = await upstream.send(item)
            else:
                async with self.budget.take(len(item.copy.data)):
                    detail = await upstream.send(item)
        except PermanentFailure as exc:
            metrics.labels("permanent_failure").inc()
            self.rt.note("upstream", False, str(exc))
            await self._bounce(item, str(exc), "5.0.0")
            return
        except TemporaryFailure as exc:
            metrics.labels("temporary_failure").inc()
            self.rt.note("upstream", False, str(exc))
            await self._defer(item, str(exc))
            return
        metrics.labels("delivered").inc()
        self.rt.note("upstream", True)
        # Waited for: a worker whose copies went but are not yet marked would widen what
        # a crash re-sends (at most one copy per delivery connection, this way).
        try:
            await self.rt.writer.write(Writes(spool=self.spool,
                                              finishes=[Finish(item.id, "delivered", detail)]))
        except StoreUnavailable as exc:  # sent, but the spool still says queued: it stays
            event(log, "delivered_mark_failed", logging.ERROR, spool_id=item.id,  # taken
                  error=str(exc))
            return
        event(log, "delivered", spool_id=item.id, kind=item.copy.kind,
              message_id=item.copy.message_id or "", attempts=item.attempts + 1)

    def _decide_again(self, item: QueuedCopy) -> tuple[Classification, str, Decision] | None:
        """The decision that now blocks this marketing copy (with what it was made on),
        or None when it may go: not marketing, still allowed, or monitor mode."""
        c = item.copy
        if self.rt.settings.gateway.monitor or c.kind != "copy":
            return None
        marketing = c.marketing or legacy_marketing(self.rt, c)
        if marketing is None:
            return None
        consent = self.rt.consent
        if consent.still_allows(c.org or "", marketing.address, marketing.incarnation,
                                marketing.optouts_seen):
            return None  # nothing that could change it has: the same decision, for a count
        what = Classification(org=c.org or "", stream=c.stream, purpose=marketing.purpose,
                              nature=marketing.nature, category=marketing.category)
        decision = consent.evaluate(what, "email", marketing.address)
        return None if decision.allowed else (what, marketing.address, decision)

    async def _drop_blocked(self, item: QueuedCopy, what: Classification, address: str,
                            decision: Decision) -> None:
        """The copy now blocks: never delivered. The new decision is recorded and the
        envelope sender gets one DSN naming the recipient and the reason."""
        c = item.copy
        detail = f"blocked before delivery: {decision.reason}"
        notice = None
        if c.mail_from:
            dsn = build_dsn(hostname=self.rt.settings.smtp.hostname, to=c.mail_from,
                            original=c.data, failures=[Failure(
                                c.rcpt, "5.7.1", f"smtp; 550 5.7.1 {detail}", decision.reason)])
            notice = Copy("dsn", "", c.mail_from, dsn, c.message_id, c.stream, c.org)
        consent = self.rt.consent
        written = await self.rt.writer.write(Writes(
            decisions=[consent.entry(what, "email", address, decision, c.message_id)],
            spool=self.spool, finishes=[Finish(item.id, "dropped", detail, notice=notice,
                                               if_erased=self._erased_notice(item))]))
        outcome = consent.verdict(decision, written.decision_ids[0]).outcome
        self.rt.metrics.decisions.labels("email", outcome, decision.reason).inc()
        event(log, "dropped_before_delivery", logging.WARNING, spool_id=item.id,
              message_id=c.message_id or "", reason=decision.reason)
        self.wake()

    async def _defer(self, item: QueuedCopy, detail: str) -> None:
        if time.time() - item.created_at > self.settings.max_age:
            await self._bounce(item, f"gave up after {item.attempts + 1} attempts: {detail}",
                               "4.4.7")
            return
        at = time.time() + backoff(item.attempts, self.settings.retry_initial,
                                   self.settings.retry_max)
        await self.rt.writer.write(Writes(spool=self.spool, finishes=[
            Finish(item.id, "queued", detail, at, if_erased=self._erased_notice(item))]))
        event(log, "deferred", logging.WARNING, spool_id=item.id, attempts=item.attempts + 1,
              retry_in=round(at - time.time(), 1), error=detail)

    def _erased_notice(self, item: QueuedCopy) -> Callable[[], Copy | None]:
        """What makes the DSN this attempt owes the sender if an erasure blanks the copy
        while the attempt holds it (Spool.erase leaves held copies to their attempt);
        called only then."""
        return functools.partial(erased_notice, self.rt.settings.smtp.hostname, item.copy)

    async def _bounce(self, item: QueuedCopy, detail: str, status: str) -> None:
        """Tell the envelope sender; never bounce a bounce (null sender)."""
        c = item.copy
        if not c.mail_from or c.kind in ("dsn", "bounce"):
            await self.rt.writer.write(Writes(spool=self.spool,
                                              finishes=[Finish(item.id, "dropped", detail)]))
            event(log, "dropped", logging.ERROR, spool_id=item.id, error=detail)
            return
        dsn = build_dsn(hostname=self.rt.settings.smtp.hostname, to=c.mail_from,
                        original=c.data,
                        failures=[Failure(c.rcpt, status, f"smtp; {detail}")])
        bounce = Copy("bounce", "", c.mail_from, dsn, c.message_id, c.stream, c.org)
        await self.rt.writer.write(Writes(spool=self.spool, finishes=[
            Finish(item.id, "bounced", detail, notice=bounce,
                   if_erased=self._erased_notice(item))]))
        event(log, "bounced", logging.WARNING, spool_id=item.id, error=detail)
        self.wake()


def legacy_marketing(rt: Runtime, c: Copy) -> Marketing | None:
    """A copy spooled by 0.2, which kept no classification: a marketing copy is one the
    gateway rewrote (it carries our List-Unsubscribe). It is decided again as its stream
    classifies (per-message header overrides are gone: the stricter reading)."""
    if header_value(c.data, b"List-Unsubscribe") is None:
        return None
    what = classify(rt.settings.stream(c.stream or ""))
    try:
        address = normalise_email(c.rcpt)
    except GatewayError:
        address = c.rcpt.strip().lower()
    return Marketing(address, what.purpose, what.nature, what.category)
