"""The durable mail spool: every copy accepted with 250 lives here until delivered or
bounced. Its own SQLite file (WAL, synchronous=FULL: each commit is fsync'd), so a
`kill -9` after the 250 loses nothing and each replica can keep a local spool."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreUnavailable
from .store import ROWS_PER_STATEMENT, can_write, insert_rows, next_ids

SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,            -- copy | dsn | bounce | reply
    message_id TEXT, stream TEXT, org TEXT,
    mail_from TEXT NOT NULL, rcpt TEXT NOT NULL,
    data BLOB NOT NULL,
    created_at REAL NOT NULL, next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'queued',   -- queued | delivered | bounced | dropped
    last_error TEXT, finished_at REAL
);
CREATE INDEX IF NOT EXISTS spool_due ON spool (status, next_attempt_at);
CREATE TABLE IF NOT EXISTS delivery_log (
    id INTEGER PRIMARY KEY, spool_id INTEGER NOT NULL, at REAL NOT NULL,
    result TEXT NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS delivery_log_at ON delivery_log (at);
"""


@dataclass(frozen=True)
class Copy:
    """One message for one recipient, ready for the upstream."""

    kind: str
    mail_from: str
    rcpt: str
    data: bytes
    message_id: str | None = None
    stream: str | None = None
    org: str | None = None


@dataclass(frozen=True)
class QueuedCopy:
    id: int
    copy: Copy
    created_at: float
    attempts: int


@dataclass(frozen=True)
class Finish:
    """What became of one delivery attempt: `status` delivered, bounced or dropped (done),
    or queued with `retry_at` (deferred)."""

    spool_id: int
    status: str
    detail: str | None = None
    retry_at: float | None = None

    @property
    def result(self) -> str:
        """The delivery log's word for it."""
        return "deferred" if self.status == "queued" else self.status


class _Write:
    """One caller's write, waiting for (or done by) a group commit."""

    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn):
        self.fn = fn
        self.done = False
        self.result = None
        self.error: BaseException | None = None


class Spool:
    """Queue operations; every method is one short transaction (writes may share one
    group commit with other threads' writes)."""

    def __init__(self, data_dir: Path | str, filename: str = "spool.db"):
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / filename
        self._lock = threading.Lock()  # the connection: one transaction or read at a time
        self._queue_lock = threading.Lock()
        self._queue: list[_Write] = []  # writes waiting for the next group commit
        self.conn = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0,
                                    isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def _tx(self, fn):
        """Run `fn(conn)` in a committed (fsync'd) write transaction and return its result.

        Group commit: writes that arrive while another commit holds the connection queue
        up; the next thread to get the connection commits all of them in one transaction
        (one fsync), and each caller returns only once its own write is committed."""
        write = _Write(fn)
        with self._queue_lock:
            self._queue.append(write)
        with self._lock:
            if not write.done:  # nobody committed it for us meanwhile: commit the queue
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if write.error is not None:
            raise write.error
        return write.result

    def _commit(self, batch: list[_Write]) -> None:
        """One transaction for the batch (the caller holds self._lock). When it fails and
        holds several writes, each is tried again alone, so one write's failure is never
        another's."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            results = [w.fn(self.conn) for w in batch]
            self.conn.execute("COMMIT")
        except BaseException as exc:
            try:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if len(batch) > 1 and isinstance(exc, Exception):
                for w in batch:
                    self._commit([w])
                return
            error: BaseException = exc
            if isinstance(exc, sqlite3.Error):
                error = StoreUnavailable(f"spool write failed: {exc}")
                error.__cause__ = exc
            for w in batch:
                w.error, w.done = error, True
            if not isinstance(exc, Exception):
                raise
            return
        for w, result in zip(batch, results):
            w.result, w.done = result, True

    def put(self, copies: Iterable[Copy]) -> list[int]:
        """Store copies durably in one transaction; returns their ids. Only after this
        returns may the SMTP client be told 250."""
        return [q.id for q in self.enqueue(copies)]

    def enqueue(self, copies: Iterable[Copy]) -> list[QueuedCopy]:
        """`put`, answering the queued copies as `due` would read them back (so delivery
        can take them at once, without reading the spool)."""
        return self.write_batch(list(copies), ())

    def write_batch(self, copies: Sequence[Copy], finishes: Sequence[Finish]
                    ) -> list[QueuedCopy]:
        """New copies and finished attempts in one committed (fsync'd) transaction, one
        statement each whatever their number. Returns the new copies as queued."""
        now = time.time()

        def write(conn: sqlite3.Connection) -> list[int]:
            ids = next_ids(conn, "spool", len(copies)) if copies else range(0)
            insert_rows(conn, "INSERT INTO spool (id, kind, message_id, stream, org, mail_from, "
                        "rcpt, data, created_at, next_attempt_at) VALUES ", [
                            (i, c.kind, c.message_id, c.stream, c.org, c.mail_from, c.rcpt,
                             c.data, now, now) for i, c in zip(ids, copies)])
            if finishes:
                self._finish_rows(conn, finishes, now)
            return list(ids)

        ids = self._tx(write)
        return [QueuedCopy(i, c, now, 0) for i, c in zip(ids, copies)]

    @staticmethod
    def _finish_rows(conn: sqlite3.Connection, finishes: Sequence[Finish], now: float) -> None:
        for start in range(0, len(finishes), ROWS_PER_STATEMENT):
            part = finishes[start:start + ROWS_PER_STATEMENT]
            values = ",".join(["(?,?,?,?)"] * len(part))
            conn.execute(
                "UPDATE spool SET status = v.column2, last_error = v.column3, "  # noqa: S608
                "next_attempt_at = COALESCE(v.column4, next_attempt_at), "
                "finished_at = CASE WHEN v.column2 = 'queued' THEN finished_at ELSE ? END, "
                "attempts = attempts + 1, "
                "data = CASE WHEN v.column2 = 'delivered' THEN x'' ELSE data END "
                f"FROM (VALUES {values}) AS v "
                "WHERE spool.id = v.column1",
                [now] + [x for f in part for x in (f.spool_id, f.status, f.detail, f.retry_at)])
        insert_rows(conn, "INSERT INTO delivery_log (spool_id, at, result, detail) VALUES ",
                    [(f.spool_id, now, f.result, f.detail) for f in finishes])

    def due(self, limit: int, exclude: set[int], now: float | None = None) -> list[QueuedCopy]:
        """Queued copies whose next attempt is due, oldest first."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self.conn.execute(
                "SELECT id, kind, mail_from, rcpt, data, message_id, stream, org, created_at, "
                "attempts FROM spool WHERE status = 'queued' AND next_attempt_at <= ? "
                "ORDER BY next_attempt_at, id LIMIT ?", (now, limit + len(exclude))).fetchall()
        out = []
        for r in rows:
            if r[0] in exclude:
                continue
            out.append(QueuedCopy(r[0], Copy(r[1], r[2], r[3], bytes(r[4]), r[5], r[6], r[7]),
                                  r[8], r[9]))
        return out[:limit]

    def next_due_at(self) -> float | None:
        with self._lock:
            row = self.conn.execute("SELECT MIN(next_attempt_at) FROM spool "
                                    "WHERE status = 'queued'").fetchone()
        return row[0]

    def finish(self, *finishes: Finish) -> None:
        self.write_batch((), finishes)

    def delivered(self, spool_id: int, detail: str = "") -> None:
        self.finish(Finish(spool_id, "delivered", detail))

    def bounced(self, spool_id: int, detail: str) -> None:
        self.finish(Finish(spool_id, "bounced", detail))

    def dropped(self, spool_id: int, detail: str) -> None:
        """A failed bounce (null sender): nobody left to tell; kept for the log."""
        self.finish(Finish(spool_id, "dropped", detail))

    def retry_later(self, spool_id: int, at: float, detail: str) -> None:
        self.finish(Finish(spool_id, "queued", detail, at))

    def stats(self) -> dict:
        """Depth, oldest queued, and recent failures, for /status and /metrics."""
        with self._lock:
            depth, oldest = self.conn.execute(
                "SELECT COUNT(*), MIN(created_at) FROM spool WHERE status = 'queued'"
            ).fetchone()
            since = time.time() - 86400
            counts = dict(self.conn.execute(
                "SELECT result, COUNT(*) FROM delivery_log WHERE at >= ? GROUP BY result",
                (since,)).fetchall())
            errors = self.conn.execute(
                "SELECT l.at, l.result, l.detail, s.rcpt FROM delivery_log l JOIN spool s "
                "ON s.id = l.spool_id WHERE l.result != 'delivered' ORDER BY l.id DESC LIMIT 10"
            ).fetchall()
        return {
            "depth": depth,
            "oldest_queued_at": oldest,
            "last_24h": counts,
            "last_errors": [{"at": e[0], "result": e[1], "detail": e[2], "rcpt": e[3]}
                            for e in errors],
        }

    def status_of(self, spool_id: int) -> str | None:
        with self._lock:
            row = self.conn.execute("SELECT status FROM spool WHERE id = ?",
                                    (spool_id,)).fetchone()
        return row[0] if row else None

    def healthy(self) -> bool:
        """The spool's disk has room and a write transaction can start now."""
        return can_write(self.conn, self._lock, self.path)
