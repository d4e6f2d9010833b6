"""The writer: one thread that commits the hot paths' writes in batches.

A message accepted over SMTP needs its tokens and decisions in the ledger and its copies
in the spool (fsync'd) before the client may hear 250; a delivered copy needs marking. Done
one call at a time in the default thread pool, every message costs several thread
hand-overs and a transaction per table, and under load the hand-overs (futex wake-ups,
GIL ping-pong) cost more CPU than the work. Here the event loop hands its writes over
without waiting for a thread; the writer takes everything queued meanwhile and commits it
as one ledger transaction and one spool transaction (one fsync), one statement per table,
then answers the whole batch with one call into the loop.

Order within a batch: the ledger first (a copy must never go out with a link that does not
resolve, nor unaudited), then the spool. A batch that fails is retried one submission at a
time, so one submission's failure is never another's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import StoreUnavailable
from ..logs import event
from ..policy import Decision
from .spool import Copy, Finish, QueuedCopy, Spool
from .store import DecisionRecord, Ledger, TokenRecord

log = logging.getLogger("gateway.writer")

# A batch takes at most this many submissions (bounds one transaction's size and the
# wait of the first submission in it).
MAX_BATCH = 256


@dataclass(frozen=True)
class Writes:
    """One submission: what must be committed together before its caller goes on."""

    tokens: Sequence[TokenRecord] = ()
    decisions: Sequence[tuple[Decision, DecisionRecord]] = ()
    spool: Spool | None = None  # where `copies` and `finishes` go
    copies: Sequence[Copy] = ()
    finishes: Sequence[Finish] = ()


@dataclass
class Written:
    """What a submission produced: its decisions' ids and its copies as queued."""

    decision_ids: list[int] = field(default_factory=list)
    queued: list[QueuedCopy] = field(default_factory=list)


@dataclass
class _Job:
    writes: Writes
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    result: Written = field(default_factory=Written)
    error: BaseException | None = None


class Writer:
    """Submit `Writes` from the event loop; await the future it returns."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self._cond = threading.Condition()
        self._jobs: list[_Job] = []
        self._thread: threading.Thread | None = None
        self._closing = False
        # ledger-only writes waiting for the end of the loop's turn (see _write_gathered)
        self._gathered: list[tuple[Writes, asyncio.Future[Written]]] = []

    def submit(self, writes: Writes) -> asyncio.Future[Written]:
        """Queue `writes`; the future resolves once they are committed (or fails with
        StoreUnavailable). Never blocks on the database."""
        return self._submit_all([writes])[0]

    def _submit_all(self, many: list[Writes]) -> list[asyncio.Future[Written]]:
        """`submit` each of `many`, queued at once: the thread takes them in one batch."""
        loop = asyncio.get_running_loop()
        jobs = [_Job(writes, loop, loop.create_future()) for writes in many]
        with self._cond:
            if self._closing:
                raise StoreUnavailable("the store is shutting down")
            idle = not self._jobs
            self._jobs.extend(jobs)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gateway-writer",
                                                daemon=True)
                self._thread.start()
            elif idle:
                self._cond.notify()
        return [job.future for job in jobs]

    async def write(self, writes: Writes) -> Written:
        """`submit` and wait. Ledger-only writes (a text's decision, say) are gathered for
        the rest of the event loop's turn and committed together on the loop (see
        `_write_gathered`)."""
        if writes.spool is None:
            return await self._gather(writes)
        return await self.submit(writes)

    def _gather(self, writes: Writes) -> asyncio.Future[Written]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Written] = loop.create_future()
        batch = self._gathered
        if batch and batch[0][1].get_loop() is not loop:
            self._commit_orphans(batch)
        if not batch:
            batch = self._gathered = []
            loop.call_soon(self._write_gathered, batch)
        batch.append((writes, future))
        return future

    def _commit_orphans(self, batch: list[tuple[Writes, asyncio.Future[Written]]]) -> None:
        """Writes gathered on a loop that stopped before its turn ended (a gateway
        restarted within one process): committed through the thread all the same. Their
        futures belong to that loop, where nobody can wait for them any more."""
        orphans = [writes for writes, _ in batch]
        batch.clear()
        self.submit(Writes(tokens=[t for w in orphans for t in w.tokens],
                           decisions=[d for w in orphans for d in w.decisions])
                    ).add_done_callback(_ignore)

    def _write_gathered(self, batch: list[tuple[Writes, asyncio.Future[Written]]]) -> None:
        """Commit the ledger-only writes gathered during one turn of the loop, on the loop,
        as one transaction: a commit costs the same however few rows it has (locks, and a
        WAL page per table and index touched: 35 µs alone, about 100 µs in a busy
        gateway), so requests that reach their decision in the same turn share one. Done
        on the spot only when nothing else holds the write lock (it never waits); otherwise
        each goes to the thread, which waits and, should the batch fail, retries each
        alone."""
        if batch is self._gathered:
            self._gathered = []
        gathered = batch[:]
        batch.clear()  # taken: a batch is committed once
        if not gathered:
            return
        ids = None
        if not self._jobs:
            ids = self.ledger.try_write_now([t for w, _ in gathered for t in w.tokens],
                                            [d for w, _ in gathered for d in w.decisions])
        if ids is None:  # to the thread, as one batch (each alone should it fail)
            try:
                submitted = self._submit_all([writes for writes, _ in gathered])
            except StoreUnavailable as exc:
                for _, future in gathered:
                    if not future.done():
                        future.set_exception(exc)
                return
            for (_, future), source in zip(gathered, submitted):
                _chain(source, future)
            return
        if self.ledger.checkpoint_due():
            self.submit(Writes()).add_done_callback(_ignore)
        shares = _split(ids, [len(w.decisions) for w, _ in gathered])
        for (_, future), mine in zip(gathered, shares):
            if not future.done():  # a caller that gave up
                future.set_result(Written(decision_ids=mine))

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closing:
                    self._cond.wait()
                jobs, self._jobs = self._jobs[:MAX_BATCH], self._jobs[MAX_BATCH:]
                if not jobs:
                    return
            try:
                self._commit(jobs)
            except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it
                for job in jobs:
                    job.error = job.error or exc
                event(log, "writer_failed", logging.ERROR, error=repr(exc))
            self._answer(jobs)

    def _commit(self, jobs: list[_Job]) -> None:
        if self.ledger.checkpoint_due():
            self.ledger.checkpoint()  # for the writes made on the spot
        self._stage([j for j in jobs if j.writes.tokens or j.writes.decisions], self._ledger)
        by_spool: dict[int, list[_Job]] = {}
        for job in jobs:
            if job.error is None and job.writes.spool is not None and (
                    job.writes.copies or job.writes.finishes):
                by_spool.setdefault(id(job.writes.spool), []).append(job)
        for group in by_spool.values():
            self._stage(group, self._spool)

    @staticmethod
    def _stage(jobs: list[_Job], write: Callable[[list[_Job]], None]) -> None:
        """`write` the jobs together; when that fails, each alone."""
        if not jobs:
            return
        try:
            write(jobs)
        except Exception as exc:  # noqa: BLE001 - handed to the job's caller
            if len(jobs) > 1:
                for job in jobs:
                    Writer._stage([job], write)
                return
            if not isinstance(exc, StoreUnavailable):
                wrapped = StoreUnavailable(f"write failed: {exc}")
                wrapped.__cause__ = exc
                exc = wrapped
            jobs[0].error = exc

    def _ledger(self, jobs: list[_Job]) -> None:
        ids = self.ledger.write_batch(
            tokens=[t for j in jobs for t in j.writes.tokens],
            decisions=[d for j in jobs for d in j.writes.decisions])
        for job, mine in zip(jobs, _split(ids, [len(j.writes.decisions) for j in jobs])):
            job.result.decision_ids = mine

    @staticmethod
    def _spool(jobs: list[_Job]) -> None:
        spool = jobs[0].writes.spool
        assert spool is not None
        queued = spool.write_batch([c for j in jobs for c in j.writes.copies],
                                   [f for j in jobs for f in j.writes.finishes])
        for job, mine in zip(jobs, _split(queued, [len(j.writes.copies) for j in jobs])):
            job.result.queued = mine

    @staticmethod
    def _answer(jobs: list[_Job]) -> None:
        by_loop: dict[int, tuple[asyncio.AbstractEventLoop, list[_Job]]] = {}
        for job in jobs:
            by_loop.setdefault(id(job.loop), (job.loop, []))[1].append(job)
        for loop, group in by_loop.values():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, group)


def _split(results: list, sizes: list[int]) -> list[list]:
    """A batch's results back into each job's share, in order."""
    shares, at = [], 0
    for n in sizes:
        shares.append(results[at:at + n])
        at += n
    return shares


def _chain(source: asyncio.Future[Written], target: asyncio.Future[Written]) -> None:
    """`target` gets `source`'s outcome."""
    def settle(done: asyncio.Future[Written]) -> None:
        if target.done():
            if not done.cancelled():
                done.exception()  # retrieved: its caller gave up
            return
        if done.cancelled():
            target.cancel()
        elif done.exception() is not None:
            target.set_exception(done.exception())
        else:
            target.set_result(done.result())

    source.add_done_callback(settle)


def _ignore(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a failed checkpoint request is nobody's error


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result)
