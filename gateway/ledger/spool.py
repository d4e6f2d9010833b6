"""The durable mail spool: every copy accepted with 250 lives here until delivered or
bounced. Its own SQLite file (WAL, synchronous=FULL: each commit is fsync'd), so a
`kill -9` after the 250 loses nothing and each replica can keep a local spool."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreUnavailable
from . import sqlitefile
from .store import ROWS_PER_STATEMENT, can_write, insert_rows, next_ids

log = logging.getLogger("gateway.spool")

SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,            -- copy | dsn | bounce | reply
    message_id TEXT, stream TEXT, org TEXT,
    mail_from TEXT NOT NULL, rcpt TEXT NOT NULL,
    data BLOB NOT NULL,
    created_at REAL NOT NULL, next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'queued',   -- queued | delivered | bounced | dropped | erased
    last_error TEXT, finished_at REAL,
    -- a marketing copy: what its decision was made on, to decide it again before each
    -- attempt (NULL for service copies, DSNs, bounces and relayed replies); and, for one
    -- that allowed, which run decided it and the opt-out rows it saw (ConsentService)
    address TEXT, purpose TEXT, nature TEXT, category TEXT,
    incarnation TEXT, optouts_seen INTEGER
);
CREATE INDEX IF NOT EXISTS spool_due ON spool (status, next_attempt_at);
CREATE TABLE IF NOT EXISTS delivery_log (
    id INTEGER PRIMARY KEY, spool_id INTEGER NOT NULL, at REAL NOT NULL,
    result TEXT NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS delivery_log_at ON delivery_log (at);
"""
# Columns added since 0.2 (a spool written by 0.2 gains them, NULL, when opened).
ADDED_COLUMNS = {"address": "TEXT", "purpose": "TEXT", "nature": "TEXT", "category": "TEXT",
                 "incarnation": "TEXT", "optouts_seen": "INTEGER"}
# Every column a copy is read back from, in `_row_to_copy` order.
COPY_COLUMNS = ("id, kind, mail_from, rcpt, data, message_id, stream, org, created_at, "
                "attempts, address, purpose, nature, category, incarnation, optouts_seen")


def create_schema(conn: sqlite3.Connection) -> None:
    """The spool's tables, and the columns a spool of an earlier version lacks."""
    conn.executescript(SCHEMA)
    have = {row[1] for row in conn.execute("PRAGMA table_info(spool)")}
    for name, kind in ADDED_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE spool ADD COLUMN {name} {kind}")


@dataclass(frozen=True)
class Marketing:
    """What a marketing copy was decided on: enough to decide it again, against the
    ledger as it is then, before every delivery attempt."""

    address: str  # normalised, as the ledger keys it
    purpose: str
    nature: str
    category: str | None
    incarnation: str | None = None  # see ConsentService.still_allows
    optouts_seen: int | None = None


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
    marketing: Marketing | None = None  # set on every copy that needed a decision

    def values(self) -> tuple:
        """The columns `kind` … `category` of its spool row, in SCHEMA order."""
        m = self.marketing
        return (self.kind, self.message_id, self.stream, self.org, self.mail_from, self.rcpt,
                self.data, *((m.address, m.purpose, m.nature, m.category, m.incarnation,
                              m.optouts_seen) if m else (None,) * 6))


def _row_to_copy(r: Sequence) -> QueuedCopy:
    """A row of `SELECT {COPY_COLUMNS}` as a queued copy."""
    marketing = Marketing(*r[10:16]) if r[11] is not None else None
    return QueuedCopy(r[0], Copy(r[1], r[2], r[3], bytes(r[4]), r[5], r[6], r[7], marketing),
                      r[8], r[9])


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
    # Spooled with the outcome, in its transaction: `notice` (a DSN for a drop or a bounce)
    # if the copy is still there; `if_erased()` (the DSN an erasure owes its sender, made
    # only then) if an erasure blanked it while the attempt held it. Exactly one DSN.
    notice: Copy | None = None
    if_erased: Callable[[], Copy | None] | None = None

    @property
    def result(self) -> str:
        """The delivery log's word for it."""
        return "deferred" if self.status == "queued" else self.status


class Spool:
    """Queue operations, each one short transaction. In a running gateway one thread
    writes (gateway.ledger.writer batches everyone's writes into `write_batch`).

    The spool is the one hand-off between accepting and delivering: delivery `take`s due
    copies, and a copy stays taken (by this process) until the transaction recording its
    attempt is committed. Taking and that release happen under the connection's lock, so
    a read never sees a finished copy as still queued, and a restart frees every copy."""

    def __init__(self, data_dir: Path | str, filename: str = "spool.db"):
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / filename
        # One process at a time: a second gateway on the same data_dir (or a worker's
        # twin) would deliver the same copies again.
        self._owner = _lock_file(self.path)
        if self._owner is None:
            raise SpoolBusy(f"{self.path} is in use by another gateway process "
                            "(two gateways on one data_dir?)")
        self._lock = threading.Lock()  # the connection: one transaction or read at a time
        self._taken: set[int] = set()  # handed to delivery, attempt not yet recorded
        # secure_delete: a finished copy's body is cut from its row, and an erased
        # person's rows deleted: overwritten in the file too (docs/privacy.md).
        self.conn = sqlitefile.connect(self.path)
        create_schema(self.conn)

    def close(self) -> None:
        with self._lock:
            self.conn.close()
            if self._owner is not None:
                os.close(self._owner)  # releases the lock
                self._owner = None

    def adopt(self, other: Path) -> int:
        """Take over the queued copies of spool file `other` (a worker's that is no more,
        after `processes` went down) and delete it. Returns how many were queued there.
        A crash between the two steps may deliver those copies twice, never lose one."""
        owner = _lock_file(other)
        if owner is None:
            return 0  # a live process has it: not an orphan
        try:
            src = sqlite3.connect(other, isolation_level=None)
            try:
                create_schema(src)
                rows = src.execute(
                    "SELECT kind, message_id, stream, org, mail_from, rcpt, data, created_at, "
                    "next_attempt_at, attempts, last_error, address, purpose, nature, "
                    "category, incarnation, optouts_seen FROM spool WHERE status = 'queued' "
                    "ORDER BY id").fetchall()
            finally:
                src.close()

            def insert(conn: sqlite3.Connection) -> None:
                ids = next_ids(conn, "spool", len(rows))
                insert_rows(conn, "INSERT INTO spool (id, kind, message_id, stream, org, "
                            "mail_from, rcpt, data, created_at, next_attempt_at, attempts, "
                            "last_error, address, purpose, nature, category, incarnation, "
                            "optouts_seen) VALUES ",
                            [(i, *r) for i, r in zip(ids, rows)])

            self._tx(insert)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{other}{suffix}").unlink(missing_ok=True)
            Path(f"{other}.lock").unlink(missing_ok=True)
        finally:
            os.close(owner)
        return len(rows)

    def _tx(self, fn, released: Iterable[int] = ()):
        """Run `fn(conn)` in one committed (fsync'd) write transaction; its result.
        StoreUnavailable when it could not be committed: then nothing was. Once it is,
        the copies `released` are no longer taken."""
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                result = fn(self.conn)
                self.conn.execute("COMMIT")
                self._taken.difference_update(released)
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreUnavailable(f"spool write failed: {exc}") from exc
                raise
        return result

    def enqueue(self, copies: Iterable[Copy]) -> list[QueuedCopy]:
        """Store copies durably in one transaction; the copies as `due` would read them
        back (so delivery can take them at once, without reading the spool)."""
        return self.write_batch(list(copies), ())

    def write_batch(self, copies: Sequence[Copy], finishes: Sequence[Finish]
                    ) -> list[QueuedCopy]:
        """New copies and finished attempts in one committed (fsync'd) transaction, one
        statement each whatever their number. Returns the new copies as queued."""
        now = time.time()

        def write(conn: sqlite3.Connection) -> list[int]:
            ids = self._insert(conn, copies, now)
            if finishes:
                notices = self._notices(conn, finishes)
                self._finish_rows(conn, finishes, now)
                self._insert(conn, notices, now)
            return ids

        ids = self._tx(write, [f.spool_id for f in finishes])
        return [QueuedCopy(i, c, now, 0) for i, c in zip(ids, copies)]

    @staticmethod
    def _notices(conn: sqlite3.Connection, finishes: Sequence[Finish]) -> list[Copy]:
        """The DSNs these outcomes carry, each as its copy is found (see Finish)."""
        carrying = [f for f in finishes if f.notice is not None or f.if_erased is not None]
        if not carrying:
            return []
        marks = ",".join("?" * len(carrying))
        present = {r[0] for r in conn.execute(
            f"SELECT id FROM spool WHERE id IN ({marks}) AND status != 'erased'",  # noqa: S608
            [f.spool_id for f in carrying]).fetchall()}
        return [n for f in carrying if (n := f.notice if f.spool_id in present else
                                        f.if_erased and f.if_erased()) is not None]

    @staticmethod
    def _insert(conn: sqlite3.Connection, copies: Sequence[Copy], now: float) -> list[int]:
        ids = next_ids(conn, "spool", len(copies)) if copies else range(0)
        insert_rows(conn, "INSERT INTO spool (id, kind, message_id, stream, org, mail_from, "
                    "rcpt, data, address, purpose, nature, category, incarnation, "
                    "optouts_seen, created_at, next_attempt_at) VALUES ",
                    [(i, *c.values(), now, now) for i, c in zip(ids, copies)])
        return list(ids)

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
                # Kept no longer than needed: sent, bounced (the DSN holds what the sender
                # needs) or dropped, a copy's body goes (docs/privacy.md).
                "data = CASE WHEN v.column2 = 'queued' THEN data ELSE x'' END "
                f"FROM (VALUES {values}) AS v "
                "WHERE spool.id = v.column1 AND spool.status != 'erased'",
                [now] + [x for f in part for x in (f.spool_id, f.status, f.detail, f.retry_at)])
        insert_rows(conn, "INSERT INTO delivery_log (spool_id, at, result, detail) VALUES ",
                    [(f.spool_id, now, f.result, f.detail) for f in finishes])

    def erase(self, address: str, org: str = "*",
              notice: Callable[[Copy], Copy | None] = lambda copy: None) -> int:
        """Delete every copy to `address` (normalised; waiting or finished) of `org`'s (or
        every org's, "*") and its delivery log, then truncate the WAL: an erasure. A waiting
        copy was accepted with a 250, so its sender is told: `notice` makes that DSN,
        spooled in the same transaction. How many copies were waiting."""
        scope, params = ("", [address, address]) if org == "*" else (
            " AND org = ?", [address, address, org])

        def delete(conn: sqlite3.Connection) -> int:
            rows = conn.execute("SELECT id, status FROM spool WHERE (address = ? OR "  # noqa: S608
                                f"lower(rcpt) = ?){scope}", params).fetchall()
            if not rows:
                return 0
            ids = [r[0] for r in rows]
            waiting = [r[0] for r in rows if r[1] == "queued"]
            # A copy delivery holds now is told about by that attempt (Delivery._erased):
            # exactly one DSN either way.
            untaken = [i for i in waiting if i not in self._taken]
            marks = ",".join("?" * len(untaken))
            notices = [n for r in conn.execute(
                f"SELECT {COPY_COLUMNS} FROM spool WHERE id IN ({marks})",  # noqa: S608
                untaken).fetchall() if (n := notice(_row_to_copy(r).copy))] if untaken else []
            marks = ",".join("?" * len(ids))
            conn.execute(f"DELETE FROM delivery_log WHERE spool_id IN ({marks})", ids)  # noqa: S608
            # Blanked, not deleted: an id is never given out again while an attempt that
            # held the erased copy may still record its outcome (Finish skips it).
            conn.execute("UPDATE spool SET status = 'erased', data = x'', rcpt = '', "  # noqa: S608
                         "mail_from = '', address = NULL, message_id = NULL, last_error = NULL, "
                         f"finished_at = ? WHERE id IN ({marks})", [time.time(), *ids])
            self._insert(conn, notices, time.time())
            return len(waiting)

        waiting = self._tx(delete)
        with self._lock, contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return waiting

    def take(self, limit: int, now: float | None = None) -> list[QueuedCopy]:
        """Up to `limit` queued copies whose next attempt is due and that are not taken,
        oldest first; now taken, until an attempt's outcome is written (`write_batch`) or
        they are `release`d."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self.conn.execute(
                f"SELECT {COPY_COLUMNS} FROM spool "  # noqa: S608 - a constant
                "WHERE status = 'queued' AND next_attempt_at <= ? ORDER BY next_attempt_at, "
                "id LIMIT ?", (now, limit + len(self._taken))).fetchall()
            taken = [_row_to_copy(r) for r in rows if r[0] not in self._taken][:limit]
            self._taken.update(item.id for item in taken)
        return taken

    def release(self, ids: Iterable[int]) -> None:
        """Taken copies given back unattempted (or whose attempt crashed): due again."""
        with self._lock:
            self._taken.difference_update(ids)

    @property
    def taken(self) -> int:
        """How many copies delivery holds now."""
        return len(self._taken)

    def next_due_at(self) -> float | None:
        with self._lock:
            row = self.conn.execute("SELECT MIN(next_attempt_at) FROM spool "
                                    "WHERE status = 'queued'").fetchone()
        return row[0]

    def stats(self) -> dict:
        """Depth, oldest queued, and recent failures, for /status and /metrics."""
        with self._lock:
            return _stats(self.conn)

    def status_of(self, spool_id: int) -> str | None:
        with self._lock:
            row = self.conn.execute("SELECT status FROM spool WHERE id = ?",
                                    (spool_id,)).fetchone()
        return row[0] if row else None

    def healthy(self) -> bool:
        """The spool's disk has room and a write transaction can start now."""
        return can_write(self.conn, self._lock, self.path)


class SpoolBusy(StoreUnavailable):
    """Another process holds this spool file."""


def _lock_file(spool_path: Path) -> int | None:
    """An exclusive lock on `spool_path`'s lock file: its descriptor, or None when another
    process holds it (the lock goes with the process, however it ends)."""
    fd = os.open(f"{spool_path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def spool_name(worker: int) -> str:
    """Worker 0 (and a gateway of one process) keeps spool.db; worker k spool-k.db."""
    return "spool.db" if worker == 0 else f"spool-{worker}.db"


def open_spool(data_dir: Path | str, worker: int = 0, processes: int = 1) -> Spool:
    """This worker's spool. Worker 0 also takes over the spools of workers that are no
    more (spool-k.db with k >= processes), so nothing queued there is left behind."""
    spool = Spool(data_dir, spool_name(worker))
    if worker == 0:
        for path in sorted(Path(data_dir).glob("spool-*.db")):
            index = path.stem.removeprefix("spool-")
            if index.isdigit() and int(index) >= processes:
                moved = spool.adopt(path)
                log.warning("event=spool_adopted from=%s copies=%d", path.name, moved)
    return spool


def spool_stats(data_dir: Path | str) -> dict:
    """`Spool.stats` over every worker's spool in `data_dir` (read-only): what /status
    shows, whichever worker answers."""
    total: dict = {"depth": 0, "oldest_queued_at": None, "last_24h": {}, "last_errors": []}
    for path in sorted(Path(data_dir).glob("spool*.db")):
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        except sqlite3.Error:
            continue
        try:
            one = _stats(conn)
        except sqlite3.Error:  # not a spool (yet): nothing to count
            continue
        finally:
            conn.close()
        total["depth"] += one["depth"]
        if one["oldest_queued_at"] is not None:
            total["oldest_queued_at"] = min(t for t in (total["oldest_queued_at"],
                                                        one["oldest_queued_at"])
                                            if t is not None)
        for result, n in one["last_24h"].items():
            total["last_24h"][result] = total["last_24h"].get(result, 0) + n
        total["last_errors"] += one["last_errors"]
    total["last_errors"] = sorted(total["last_errors"], key=lambda e: e["at"],
                                  reverse=True)[:10]
    return total


def _stats(conn: sqlite3.Connection) -> dict:
    depth, oldest = conn.execute(
        "SELECT COUNT(*), MIN(created_at) FROM spool WHERE status = 'queued'").fetchone()
    counts = dict(conn.execute(
        "SELECT result, COUNT(*) FROM delivery_log WHERE at >= ? GROUP BY result",
        (time.time() - 86400,)).fetchall())
    errors = conn.execute(
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
