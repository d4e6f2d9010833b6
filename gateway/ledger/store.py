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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from ..errors import StoreUnavailable
from ..policy import ALL_ORGS, Decision, Evidence, OptOut

SCHEMA = """
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY,
    org TEXT NOT NULL, channel TEXT NOT NULL, address TEXT NOT NULL,
    basis TEXT NOT NULL, obtained_at TEXT NOT NULL, source TEXT NOT NULL DEFAULT '',
    categories TEXT NOT NULL DEFAULT '[]', context TEXT, collected_by TEXT NOT NULL,
    opt_out_offered INTEGER, named_orgs TEXT NOT NULL DEFAULT '[]',
    recorded_at TEXT NOT NULL, recorded_via TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS evidence_person ON evidence (address, channel, org);
CREATE TABLE IF NOT EXISTS optouts (
    id INTEGER PRIMARY KEY,
    org TEXT NOT NULL, channel TEXT NOT NULL, address TEXT NOT NULL,
    kind TEXT NOT NULL, at TEXT NOT NULL, source TEXT NOT NULL DEFAULT '',
    method TEXT NOT NULL DEFAULT '', message_id TEXT, client TEXT, token TEXT
);
CREATE INDEX IF NOT EXISTS optouts_person ON optouts (address, org);
CREATE INDEX IF NOT EXISTS optouts_at ON optouts (at);
CREATE INDEX IF NOT EXISTS optouts_token ON optouts (token);
CREATE INDEX IF NOT EXISTS optouts_message ON optouts (message_id);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL, org TEXT NOT NULL, stream TEXT, channel TEXT NOT NULL,
    address TEXT NOT NULL, purpose TEXT, nature TEXT, category TEXT,
    allowed INTEGER NOT NULL, outcome TEXT NOT NULL, reason TEXT NOT NULL,
    evidence_id TEXT, message_id TEXT, mode TEXT NOT NULL, ruleset TEXT NOT NULL,
    explanation TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS decisions_person ON decisions (address, org);
CREATE INDEX IF NOT EXISTS decisions_at ON decisions (at);
CREATE INDEX IF NOT EXISTS decisions_reason_at ON decisions (reason, at);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL, channel TEXT NOT NULL, address TEXT NOT NULL, stream TEXT,
    message_id TEXT, reply_to TEXT, created_at TEXT NOT NULL
);
"""


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


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


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


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class TokenRecord:
    """Who an unsubscribe token stands for (never put in the token itself)."""

    id: str
    org: str
    channel: str
    address: str
    stream: str | None
    message_id: str | None
    reply_to: str | None


@dataclass(frozen=True)
class DecisionRecord:
    """What `record_decision` needs besides the Decision itself."""

    org: str
    channel: str
    address: str
    stream: str | None
    purpose: str
    nature: str
    category: str | None
    message_id: str | None
    mode: str


EVIDENCE_COLUMNS = ("id", "org", "channel", "address", "basis", "obtained_at", "source",
                    "categories", "context", "collected_by", "opt_out_offered", "named_orgs")


EVIDENCE_SELECT = f"SELECT {', '.join(EVIDENCE_COLUMNS)} FROM evidence"  # noqa: S608


# One person's evidence (kind 0, EVIDENCE_COLUMNS) and opt-outs (kind 1: id, org, channel,
# address, at, kind, source, method). Put in id order by the caller: an ORDER BY here makes
# SQLite build two temporary b-trees per lookup (a quarter of its cost) to sort a few rows.
HISTORY_SELECT = (
    f"SELECT 0, {', '.join(EVIDENCE_COLUMNS)} FROM evidence "  # noqa: S608
    "WHERE address = ? AND channel = ? AND org = ? "
    "UNION ALL SELECT 1, id, org, channel, address, at, kind, source, method, "
    "NULL, NULL, NULL, NULL FROM optouts WHERE address = ? AND org IN (?, ?)")


def _kind_and_id(row: tuple) -> tuple[int, int]:
    return row[0], row[1]


def _evidence_of(r: tuple) -> Evidence:
    """An Evidence from a row of EVIDENCE_COLUMNS."""
    return Evidence(
        id=str(r[0]), org=r[1], channel=r[2], address=r[3], basis=r[4],
        obtained_at=_time(r[5]), source=r[6], categories=_names(r[7]),
        context=r[8], collected_by=r[9],
        opt_out_offered=None if r[10] is None else bool(r[10]),
        named_orgs=_names(r[11]))


def _names(text: str) -> tuple[str, ...]:
    """A JSON list column (categories, named_orgs) as a tuple; most are empty."""
    return () if text == "[]" else tuple(json.loads(text))


DECISION_INSERT = (
    "INSERT INTO decisions (id, at, org, stream, channel, address, purpose, nature, category, "
    "allowed, outcome, reason, evidence_id, message_id, mode, ruleset, explanation) VALUES ")


# Commits by try_write_now between two checkpoints (the other connections checkpoint on
# their own commits, every 1000 WAL pages).
CHECKPOINT_EVERY = 500


def _insert_batch(conn: sqlite3.Connection, tokens: Sequence[TokenRecord],
                  decisions: Sequence[tuple[Decision, DecisionRecord]]) -> list[int]:
    """One committed transaction of tokens and decisions; rolled back when it fails."""
    at = now_iso()
    if not tokens and 0 < len(decisions) <= ROWS_PER_STATEMENT and not conn.in_transaction:
        # Decisions alone (texts'): one statement, its own transaction, not four (BEGIN,
        # the next id, INSERT, COMMIT). Its rows get consecutive ids in VALUES order: each
        # new row's rowid is one more than the largest, and the statement holds the write
        # lock throughout.
        cur = conn.execute(DECISION_INSERT + ",".join(["(NULL" + ",?" * 16 + ")"]
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


def _decision_row(decision_id: int, at: str, decision: Decision, what: DecisionRecord) -> tuple:
    """`at` (the write) stands in only for a decision that does not say when it was made."""
    if decision.decided_at is not None:
        at = decision.decided_at.astimezone(UTC).isoformat(timespec="microseconds")
    outcome = decision.outcome
    if not decision.allowed and what.mode == "monitor":
        outcome = "would_block"
    return (decision_id, at, what.org, what.stream, what.channel, what.address, what.purpose,
            what.nature, what.category, int(decision.allowed), outcome, decision.reason,
            decision.evidence_id, what.message_id, what.mode, decision.ruleset,
            decision.explanation)


class Ledger:
    """Thread-safe handle on the ledger database. Writes share one connection and are
    serialised; reads use a connection of their own thread's (WAL: a read never waits for
    a write), so the event loop can look a person up while a writer thread commits."""

    def __init__(self, data_dir: Path | str, filename: str = "ledger.db"):
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / filename
        self._lock = threading.RLock()
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0,
                               isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        # NORMAL in WAL mode survives a killed process (the OS has the WAL); the spool,
        # which holds accepted mail, uses FULL and fsyncs every commit.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(SCHEMA)
        self.conn = conn
        self._failing_until = 0.0
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []  # every connection but self.conn
        self._closed = False
        self._written_now = 0

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
        writes. Commits at the end; rolls back when the block raises."""
        with self._write_lock():
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
        cur = self._reader().execute(sql, tuple(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def healthy(self) -> bool:
        """The store can start a write transaction now and its disk has room."""
        return can_write(self.conn, self._lock, self.path)

    # -- evidence -----------------------------------------------------------------------

    def record_evidence(self, record: Evidence, via: str = "api") -> int:
        """Append one validated evidence record; returns its id."""
        return self._write(
            "INSERT INTO evidence (org, channel, address, basis, obtained_at, source, "
            "categories, context, collected_by, opt_out_offered, named_orgs, recorded_at, "
            "recorded_via) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            self._evidence_row(record, via),
        )

    def record_evidence_many(self, records: Iterable[Evidence], via: str = "csv") -> int:
        """Append many records in one transaction (bulk import)."""
        rows = [self._evidence_row(r, via) for r in records]
        with self._write_lock():
            try:
                self.conn.execute("BEGIN")
                self.conn.executemany(
                    "INSERT INTO evidence (org, channel, address, basis, obtained_at, source, "
                    "categories, context, collected_by, opt_out_offered, named_orgs, "
                    "recorded_at, recorded_via) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise self._unavailable(exc) from exc
        return len(rows)

    @staticmethod
    def _evidence_row(r: Evidence, via: str) -> tuple:
        return (
            r.org, r.channel, r.address, r.basis, r.obtained_at.isoformat(), r.source,
            json.dumps(list(r.categories)), r.context, r.collected_by,
            None if r.opt_out_offered is None else int(r.opt_out_offered),
            json.dumps(list(r.named_orgs)), now_iso(), via,
        )

    def evidence_for(self, address: str, channel: str | None = None,
                     org: str | None = None) -> tuple[Evidence, ...]:
        sql, params = EVIDENCE_SELECT + " WHERE address = ?", [address]
        if channel:
            sql, params = sql + " AND channel = ?", params + [channel]
        if org:
            sql, params = sql + " AND org = ?", params + [org]
        rows = self._reader().execute(sql + " ORDER BY id", params).fetchall()
        return tuple(_evidence_of(r) for r in rows)

    # -- opt-outs -----------------------------------------------------------------------

    def record_opt_out(self, org: str, channel: str, address: str, *, kind: str = "optout",
                       source: str = "", method: str = "", message_id: str | None = None,
                       client: str | None = None, token: str | None = None,
                       at: datetime | None = None) -> int:
        """Append an opt-out (or, with kind="optin", an active opt-in that lifts one). Its
        time is taken once the write lock is held, so a decision recorded as made after
        it (decisions record when they were made) was made on a ledger that had it."""

        def insert() -> int:
            when = (at or datetime.now(UTC)).isoformat(timespec="microseconds")
            try:
                cur = self.conn.execute(
                    "INSERT INTO optouts (org, channel, address, kind, at, source, method, "
                    "message_id, client, token) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (org, channel, address, kind, when, source, method, message_id, client,
                     token))
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from exc
            return int(cur.lastrowid or 0)

        with self._write_lock():
            if self.conn.in_transaction:  # inside `exclusive()`: the lock is held already
                return insert()
            with self.exclusive():
                return insert()

    def opt_outs_for(self, address: str, org: str | None = None) -> tuple[OptOut, ...]:
        sql, params = "SELECT id, org, channel, address, at, kind, source, method FROM optouts " \
            "WHERE address = ?", [address]
        if org:
            sql, params = sql + " AND org IN (?, ?)", params + [org, ALL_ORGS]
        rows = self._reader().execute(sql + " ORDER BY id", params).fetchall()
        return tuple(OptOut(str(r[0]), r[1], r[2], r[3], _time(r[4]), r[5], r[6], r[7])
                     for r in rows)

    def opt_out_rows(self, address: str, org: str | None = None) -> list[dict]:
        sql, params = "SELECT * FROM optouts WHERE address = ?", [address]
        if org:
            sql, params = sql + " AND org IN (?, ?)", params + [org, ALL_ORGS]
        return self._rows(sql + " ORDER BY id", params)

    def opt_out_for_token(self, token: str) -> dict | None:
        rows = self._rows("SELECT * FROM optouts WHERE token = ? AND kind = 'optout' "
                          "ORDER BY id LIMIT 1", [token])
        return rows[0] if rows else None

    def opt_out_for_message(self, message_id: str, method: str,
                            kind: str = "optout") -> dict | None:
        """The opt-out (or, with kind="optin", opt-in) that message `message_id` already
        recorded by `method`: a provider's retried or replayed webhook must not count
        twice."""
        rows = self._rows("SELECT * FROM optouts WHERE message_id = ? AND method = ? "
                          "AND kind = ? ORDER BY id LIMIT 1", [message_id, method, kind])
        return rows[0] if rows else None

    def history(self, org: str, channel: str, address: str
                ) -> tuple[tuple[Evidence, ...], tuple[OptOut, ...]]:
        """What the rules engine needs for one person, org and channel: what
        `evidence_for(address, channel, org)` and `opt_outs_for(address, org)` answer, read
        with one statement (a decision per message: one read of the ledger, not two)."""
        try:
            rows = self._reader().execute(HISTORY_SELECT, (address, channel, org, address, org,
                                                           ALL_ORGS)).fetchall()
        except sqlite3.Error as exc:  # no decision without the ledger: the caller fails closed
            raise StoreUnavailable(f"ledger read failed: {exc}") from exc
        rows.sort(key=_kind_and_id)
        evidence = tuple(_evidence_of(r[1:]) for r in rows if r[0] == 0)
        optouts = tuple(OptOut(str(r[1]), r[2], r[3], r[4], _time(r[5]), r[6], r[7], r[8])
                        for r in rows if r[0] == 1)
        return evidence, optouts

    # -- decisions ----------------------------------------------------------------------

    def record_decision(self, decision: Decision, what: DecisionRecord) -> int:
        """Append one decision to the audit log; returns its id."""
        return self.write_batch(decisions=[(decision, what)])[0]

    def write_batch(self, tokens: Sequence[TokenRecord] = (),
                    decisions: Sequence[tuple[Decision, DecisionRecord]] = ()) -> list[int]:
        """Tokens and decisions in one transaction, one statement per table (a batch of
        many messages' writes costs what one message's does). Returns the decisions' ids,
        in order. StoreUnavailable when it could not be committed: then nothing was."""
        with self._write_lock():
            try:
                return _insert_batch(self.conn, tokens, decisions)
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
        return ids

    def checkpoint_due(self) -> bool:
        """Writes made by `try_write_now` since the last `checkpoint` call warrant one."""
        return self._written_now >= CHECKPOINT_EVERY

    def checkpoint(self) -> None:
        """A passive WAL checkpoint (never waits for readers or writers)."""
        self._written_now = 0
        with self._lock, contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def decisions_for(self, address: str, org: str | None = None,
                      limit: int | None = None) -> list[dict]:
        sql, params = "SELECT * FROM decisions WHERE address = ?", [address]
        if org:
            sql, params = sql + " AND org = ?", params + [org]
        sql += " ORDER BY id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self._rows(sql, params)

    def recent_decisions(self, limit: int = 50, reason: str | None = None,
                         address: str | None = None) -> list[dict]:
        sql, params = "SELECT * FROM decisions WHERE 1=1", []
        if reason:
            sql, params = sql + " AND reason = ?", params + [reason]
        if address:
            sql, params = sql + " AND address = ?", params + [address]
        # Newest first by `at`, so a reason filter walks the (reason, at) index backwards
        # instead of sorting every decision with that reason.
        return self._rows(sql + f" ORDER BY at DESC, id DESC LIMIT {int(limit)}", params)

    def decision_counts(self, since: str) -> list[dict]:
        return self._rows(
            "SELECT channel, outcome, reason, COUNT(*) AS n FROM decisions WHERE at >= ? "
            "GROUP BY channel, outcome, reason ORDER BY n DESC", [since])

    def decision_counts_by_hour(self, since: str) -> list[dict]:
        """Decisions per UTC hour ("YYYY-MM-DDTHH") and outcome since `since` (index on at)."""
        return self._rows(
            "SELECT substr(at, 1, 13) AS hour, outcome, COUNT(*) AS n FROM decisions "
            "WHERE at >= ? GROUP BY hour, outcome ORDER BY hour", [since])

    def opt_out_counts(self, since: str | None = None) -> list[dict]:
        sql, params = "SELECT channel, method, kind, COUNT(*) AS n FROM optouts", []
        if since:
            sql, params = sql + " WHERE at >= ?", [since]
        return self._rows(sql + " GROUP BY channel, method, kind ORDER BY n DESC", params)

    # -- tokens -------------------------------------------------------------------------

    def record_tokens(self, tokens: Iterable[TokenRecord]) -> None:
        self.write_batch(tokens=list(tokens))

    def token(self, token_id: str) -> TokenRecord | None:
        rows = self._rows("SELECT * FROM tokens WHERE id = ?", [token_id])
        if not rows:
            return None
        r = rows[0]
        return TokenRecord(r["id"], r["org"], r["channel"], r["address"], r["stream"],
                           r["message_id"], r["reply_to"])

    # -- export -------------------------------------------------------------------------

    def trail(self, address: str, org: str | None = None) -> dict:
        """A person's whole evidence trail: what a compliance officer hands a regulator."""
        ev_sql, params = "SELECT * FROM evidence WHERE address = ?", [address]
        if org:
            ev_sql, params = ev_sql + " AND org = ?", params + [org]
        evidence = []
        for r in self._rows(ev_sql + " ORDER BY id", params):
            r = dict(r)
            r["categories"] = json.loads(r["categories"])
            r["named_orgs"] = json.loads(r["named_orgs"])
            if r["opt_out_offered"] is not None:
                r["opt_out_offered"] = bool(r["opt_out_offered"])
            evidence.append(r)
        decisions = self.decisions_for(address, org)
        for d in decisions:
            d["allowed"] = bool(d["allowed"])
        return {
            "address": address,
            "org": org,
            "evidence": evidence,
            "opt_outs": self.opt_out_rows(address, org),
            "decisions": decisions,
        }

    def iter_all(self, table: str) -> Iterator[dict]:
        yield from self.db[table].rows
