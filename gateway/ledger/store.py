"""The evidence ledger: evidence records, opt-outs, decisions and unsubscribe tokens in
SQLite (WAL). Append-only: normal operation never updates or deletes a row. This module
is the one place that knows the SQL of the ledger."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from ..errors import StoreUnavailable
from ..policy import Decision, Evidence, OptOut
from . import migrate, sqlitefile
from .queries import (
    DECISION_INSERT,
    DECISION_VALUES,
    EVIDENCE_INSERT,
    HISTORY_SELECT,
    OPT_OUT_INSERT,
    DecisionRecord,
    LedgerQueries,
    TokenRecord,
    _decision_row,
    evidence_row,
    history_of,
    history_params,
    now_iso,
)

# After a write fails for want of the lock or of disk space, writes during this long try
# once without waiting instead of each waiting busy_timeout in turn behind the one
# connection (which would stall every request, and the thread pool, for busy_timeout
# times the queue). The first write that succeeds ends it.
FAIL_FAST_SECONDS = 2.0
# /healthz: how long the probe may wait, and the free space below which the data
# directory counts as full.
HEALTH_WAIT_SECONDS = 0.5
MIN_FREE_BYTES = 1 << 20


def can_write(conn: sqlite3.Connection, lock, path: Path) -> bool:
    """Health probe shared by the ledger and the spool: the disk has room and a write
    transaction can start within HEALTH_WAIT_SECONDS, so it answers quickly even while
    writes are stuck behind a lock."""
    if shutil.disk_usage(path.parent).free < MIN_FREE_BYTES:
        return False
    if not lock.acquire(timeout=HEALTH_WAIT_SECONDS):
        return False
    try:
        conn.execute(f"PRAGMA busy_timeout={int(HEALTH_WAIT_SECONDS * 1000)}")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.Error:
        return False
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA busy_timeout=5000")
        lock.release()


# Rows per multi-row INSERT: well inside SQLite's 32,766 bound variables at 16 columns; and
# bytes bound per statement (SQLite copies what is bound: ten 10 MB copies in one statement
# would be 100 MB more at once), so a big row gets a statement of its own.
ROWS_PER_STATEMENT = 500
BYTES_PER_STATEMENT = 1 << 20


def _size(row: tuple) -> int:
    return sum(len(v) for v in row if isinstance(v, (bytes, str)))


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[tuple]) -> None:
    """INSERT many rows with few statements (`head` ends with VALUES): up to
    ROWS_PER_STATEMENT rows or BYTES_PER_STATEMENT bytes each. One statement is one step:
    a writer thread gives up the GIL once per statement, not once per row as executemany
    does."""
    if not rows:
        return
    group = "(" + ",".join("?" * len(rows[0])) + ")"
    part: list[tuple] = []
    size = 0
    for row in rows:
        row_size = _size(row)
        if part and (len(part) >= ROWS_PER_STATEMENT or size + row_size > BYTES_PER_STATEMENT):
            conn.execute(head + ",".join([group] * len(part)), [v for r in part for v in r])
            part, size = [], 0
        part.append(row)
        size += row_size
    conn.execute(head + ",".join([group] * len(part)), [v for r in part for v in r])


def next_ids(conn: sqlite3.Connection, table: str, n: int) -> range:
    """Ids for `n` new rows of `table` (INTEGER PRIMARY KEY), inside a write transaction:
    given explicitly so a multi-row INSERT knows which row got which."""
    top = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}"  # noqa: S608 - our names
                       ).fetchone()[0]
    return range(top + 1, top + 1 + n)


# Commits by try_write_now between two checkpoints (the other connections checkpoint on
# their own commits, every 1000 WAL pages).
CHECKPOINT_EVERY = 500

# What moves with every committed change a decision could see (migration 0009); people's
# records read under the current version are kept (Ledger.history), at most this many
# (about 15 MB): a campaign decides most people once, the same people again soon after.
CHANGE_VERSION = ("SELECT (SELECT MAX(id) FROM evidence), (SELECT MAX(id) FROM optouts), "
                  "(SELECT MAX(id) FROM suppressions), (SELECT n FROM ledger_change_count)")
MAX_HISTORIES = 10_000


def _insert_batch(conn: sqlite3.Connection, tokens: Sequence[TokenRecord],
                  decisions: Sequence[tuple[Decision, DecisionRecord]]) -> list[int]:
    """One committed transaction of tokens and decisions; rolled back when it fails."""
    at = now_iso()
    if not tokens and 0 < len(decisions) <= ROWS_PER_STATEMENT and not conn.in_transaction:
        # Decisions alone (texts'): one statement, its own transaction, not four (BEGIN,
        # the next id, INSERT, COMMIT). Its rows get consecutive ids in VALUES order: each
        # new row's rowid is one more than the largest, and the statement holds the write
        # lock throughout.
        cur = conn.execute(DECISION_INSERT + ",".join(["(NULL" + ",?" * DECISION_VALUES + ")"]
                                                      * len(decisions)),
                           [v for decision, what in decisions
                            for v in _decision_row(0, at, decision, what)[1:]])
        last = int(cur.lastrowid)
        return list(range(last - len(decisions) + 1, last + 1))
    token_rows = [(t.id, t.org, t.channel, t.address, t.stream, t.message_id, t.reply_to, at)
                  for t in tokens]
    try:
        conn.execute("BEGIN IMMEDIATE")
        ids = next_ids(conn, "decisions", len(decisions)) if decisions else range(0)
        insert_rows(conn, "INSERT INTO tokens VALUES ", token_rows)
        insert_rows(conn, DECISION_INSERT, [_decision_row(i, at, decision, what)
                                            for i, (decision, what) in zip(ids, decisions)])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return list(ids)


class Ledger(LedgerQueries):
    """Thread-safe handle on the ledger database. Writes share one connection and are
    serialised; reads use a connection of their own thread's (WAL: a read never waits for
    a write), so the event loop can look a person up while a writer thread commits."""

    def __init__(self, data_dir: Path | str, filename: str = "ledger.db", *,
                 upgrade: bool = False):
        """Open (or create) the ledger. An empty database gets the schema; one at another
        schema version raises SchemaMismatch, unless `upgrade` (`gateway migrate`): then
        the missing migrations are applied (`self.applied` lists them)."""
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / filename
        self._lock = threading.RLock()
        # NORMAL in WAL mode survives a killed process (the OS has the WAL); the spool,
        # which holds accepted mail, uses FULL and fsyncs every commit. Deletes (erasure,
        # retention) overwrite what they delete: an erased address must not linger in a
        # free page of the file (docs/privacy.md).
        conn = sqlitefile.connect(self.path, synchronous="NORMAL")
        self.db = sqlite_utils.Database(conn)
        self.conn = conn
        self.applied = self._schema(upgrade)
        self._failing_until = 0.0
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []  # every connection but self.conn
        self._closed = False
        self._written_now = 0
        # The change version and what was read under it: (org, channel, address, hash):
        # history. Only the current version's records are held.
        self._histories: tuple[tuple | None, dict[tuple, tuple]] = (None, {})
        self.commits = 0  # ledger transactions of write_batch and try_write_now (for tests)

    def _schema(self, upgrade: bool) -> list[migrate.Migration]:
        """Create, check or upgrade the schema in one write transaction (BEGIN IMMEDIATE:
        processes starting together create it once)."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "schema_migrations" in tables:
                current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM "
                                       "schema_migrations").fetchone()[0]
            else:
                current = 1 if "evidence" in tables else 0  # 0.2 kept no history: version 1
            if current and not upgrade and (problem := migrate.mismatch(current, str(self.path))):
                raise problem
            conn.execute(migrate.HISTORY_TABLE)
            if current == 1 and "schema_migrations" not in tables:
                conn.execute("INSERT INTO schema_migrations VALUES (1, 'ledger', ?)",
                             (now_iso(),))
            applied = migrate.apply(
                "sqlite", conn.execute, migrate.plan(current).missing,
                lambda m: conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                                       (m.version, m.name, now_iso())))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
        return applied

    def schema_version(self) -> int:
        return self._reader().execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for reader in self._readers:
                reader.close()
            self._readers.clear()
            self.conn.close()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (made on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
                conn = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0,
                                       isolation_level=None)
                conn.execute("PRAGMA busy_timeout=5000")
                conn.execute("PRAGMA query_only=1")
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    # -- plumbing -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _write_lock(self):
        """The lock for one write. While recent writes failed (locked, disk full), a write
        does not wait busy_timeout behind the others: it tries once, failing at once."""
        with self._lock:
            hurry = time.monotonic() < self._failing_until
            if hurry:
                self.conn.execute("PRAGMA busy_timeout=0")
            try:
                yield
                self._failing_until = 0.0
            finally:
                if hurry:
                    self.conn.execute("PRAGMA busy_timeout=5000")

    @contextlib.contextmanager
    def exclusive(self):
        """The ledger's write lock for the whole block, across threads and processes: a
        check made in the block (reads see every commit) still holds when the block
        writes. Commits at the end; rolls back when the block raises. A block inside
        another of the same thread joins it (one transaction; its own writes are read back
        only once committed: reads use other connections)."""
        with self._write_lock():
            if self.conn.in_transaction:  # this thread's own outer block holds it
                yield
                return
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from exc
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise self._unavailable(exc) from exc
                raise

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        if isinstance(exc, sqlite3.OperationalError):  # locked, disk full, I/O error
            self._failing_until = time.monotonic() + FAIL_FAST_SECONDS
        return StoreUnavailable(f"ledger write failed: {exc}")

    def _write(self, sql: str, params: Iterable[Any]) -> int:
        with self._write_lock():
            try:
                cur = self.conn.execute(sql, tuple(params))
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from exc
            return int(cur.lastrowid or 0)

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict]:
        try:
            cur = self._reader().execute(sql, tuple(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"ledger read failed: {exc}") from exc

    def _tuples(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        try:
            return self._reader().execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"ledger read failed: {exc}") from exc

    def healthy(self) -> bool:
        """The store can start a write transaction now and its disk has room."""
        return can_write(self.conn, self._lock, self.path)

    # -- evidence -----------------------------------------------------------------------

    def record_evidence(self, record: Evidence, via: str = "api") -> int:
        """Append one validated evidence record; returns its id."""
        return self._write(
            EVIDENCE_INSERT,
            evidence_row(record, via),
        )

    def record_evidence_many(self, records: Iterable[Evidence], via: str = "csv") -> int:
        """Append many records in one transaction (bulk import)."""
        rows = [evidence_row(r, via) for r in records]
        with self._write_lock():
            try:
                self.conn.execute("BEGIN")
                self.conn.executemany(EVIDENCE_INSERT, rows)
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise self._unavailable(exc) from exc
        return len(rows)

    # -- opt-outs -----------------------------------------------------------------------

    def record_opt_out(self, org: str, channel: str, address: str, *, kind: str = "optout",
                       source: str = "", method: str = "", message_id: str | None = None,
                       client: str | None = None, token: str | None = None,
                       at: datetime | None = None, request_id: str | None = None,
                       categories: Sequence[str] = ()) -> int | None:
        """Append an opt-out (or, with kind="optin", an active opt-in that lifts one); its
        id, or None when a row with this `request_id` exists already (recorded once). Its
        time is taken once the write lock is held, so a decision recorded as made after
        it (decisions record when they were made) was made on a ledger that had it."""

        def insert() -> int | None:
            when = (at or datetime.now(UTC)).isoformat(timespec="microseconds")
            try:
                row = self.conn.execute(OPT_OUT_INSERT, (
                    org, channel, address, kind, when, source, method, message_id, client,
                    token, request_id, json.dumps(list(categories)))).fetchone()
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from exc
            return None if row is None else int(row[0])

        with self._write_lock():
            if self.conn.in_transaction:  # inside `exclusive()`: the lock is held already
                return insert()
            with self.exclusive():
                return insert()

    def history(self, org: str, channel: str, address: str, suppressed_as: str = ""
                ) -> tuple[tuple[Evidence, ...], tuple[OptOut, ...]]:
        """What the rules engine needs for one person, org and channel: what
        `evidence_for(address, channel, org)` and `opt_outs_for(address, org)` answer, and
        the erasures of `suppressed_as` (the keyed hash; as opt-outs of kind "erased"),
        read with one statement (a decision per message: one read of the ledger, not
        three). Kept per person while the ledger's change version (migration 0009: what
        any committed change to evidence, opt-outs or erasures moves, from any process)
        stays the same: then the next decision for them costs one small read, not the
        records (issue 18)."""
        key = (org, channel, address, suppressed_as)
        try:
            reader = self._reader()
            # First the version, then the records: a change committed in between makes
            # the records newer than the version they are kept under, never older.
            version = reader.execute(CHANGE_VERSION).fetchone()
            kept_under, kept = self._histories
            if kept_under != version:  # what was kept can never be current again: let it go
                kept = {}
                self._histories = (version, kept)
            elif (found := kept.get(key)) is not None:
                return found
            rows = reader.execute(
                HISTORY_SELECT, history_params(org, channel, address, suppressed_as)
            ).fetchall()
        except sqlite3.Error as exc:  # no decision without the ledger: the caller fails closed
            raise StoreUnavailable(f"ledger read failed: {exc}") from exc
        found = history_of(rows)
        if len(kept) < MAX_HISTORIES:
            kept[key] = found
        return found

    # -- privacy (see ledger/privacy.py) ------------------------------------------------

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> tuple[int, list[tuple]]:
        try:
            cur = self.conn.execute(sql, tuple(params))
            rows = cur.fetchall() if cur.description else []
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc
        return cur.rowcount, rows

    def _after_erasure(self, tries: int = 20) -> None:
        """Copy the WAL into the file and truncate it, so the erased rows' old pages leave
        the WAL now (secure_delete zeroed them in the file). A reader in the middle of a
        read makes it wait: tried again for a moment, else the next checkpoint does it."""
        for _ in range(tries):
            with self._lock:
                busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy:
                return
            time.sleep(0.05)

    # -- decisions ----------------------------------------------------------------------


    async def ahistory(self, org: str, channel: str, address: str, suppressed_as: str = ""
                       ) -> tuple[tuple[Evidence, ...], tuple[OptOut, ...]]:
        """`history` from the event loop: read right there (an indexed read of a local
        file costs less than any hand-over to a thread; measured, docs/decisions.md)."""
        return self.history(org, channel, address, suppressed_as)

    def write_batch(self, tokens: Sequence[TokenRecord] = (),
                    decisions: Sequence[tuple[Decision, DecisionRecord]] = ()) -> list[int]:
        """Tokens and decisions in one transaction, one statement per table (a batch of
        many messages' writes costs what one message's does). Returns the decisions' ids,
        in order. StoreUnavailable when it could not be committed: then nothing was."""
        with self._write_lock():
            try:
                ids = _insert_batch(self.conn, tokens, decisions)
                self.commits += 1
                return ids
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc

    def try_write_now(self, tokens: Sequence[TokenRecord] = (),
                      decisions: Sequence[tuple[Decision, DecisionRecord]] = ()
                      ) -> list[int] | None:
        """`write_batch` on the calling thread (the event loop's) if it can be done without
        waiting: None when another connection holds the write lock, or on any error (the
        caller then goes through the writer thread, which waits and reports). The commit
        is an append to the WAL (synchronous=NORMAL: no fsync); checkpoints are left to
        the other connections (see `checkpoint`)."""
        conn = getattr(self._local, "now", None)
        if conn is None:
            if self._closed:
                return None
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            with self._lock:
                self._readers.append(conn)
            self._local.now = conn
        try:
            ids = _insert_batch(conn, tokens, decisions)
        except sqlite3.Error:
            return None
        self._written_now += 1
        self.commits += 1
        return ids

    def checkpoint_due(self) -> bool:
        """Writes made by `try_write_now` since the last `checkpoint` call warrant one."""
        return self._written_now >= CHECKPOINT_EVERY

    def checkpoint(self) -> None:
        """A passive WAL checkpoint (never waits for readers or writers)."""
        self._written_now = 0
        with self._lock, contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- export -------------------------------------------------------------------------

    def iter_all(self, table: str) -> Iterator[dict]:
        yield from self.db[table].rows
