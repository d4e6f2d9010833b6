"""The ledger on PostgreSQL: one database shared by any number of gateways.

Same records, same SQL (`queries.py`, `?` turned into `%s`), same methods as the SQLite
ledger, through psycopg 3 and a small connection pool (see docs/decisions.md for why
psycopg). Differences that matter:

- Ids come from each table's identity sequence; a batch takes its decisions' ids with one
  `nextval` round trip, so each caller knows its own.
- The write lock of `exclusive()` and of an opt-out is a transaction-scoped advisory lock,
  so checks made under it hold across every gateway on the database.
- The server being down or unreachable raises StoreUnavailable quickly: the pool waits at
  most `CHECKOUT_SECONDS` for a connection, libpq gives up connecting after
  `connect_timeout`, and after a failure, for FAIL_FAST_SECONDS, calls fail at once instead
  of each waiting again (a ledger outage must not freeze the event loop).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import select
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg_pool

from ..errors import StoreUnavailable
from ..policy import Decision, Evidence, OptOut
from . import migrate
from .cache import HistoryCache
from .queries import (
    DECISION_INSERT,
    DECISION_VALUES,
    EVIDENCE_INSERT,
    HISTORY_SELECT,
    OPT_OUT_INSERT,
    TABLES,
    DecisionRecord,
    LedgerQueries,
    TokenRecord,
    _decision_row,
    evidence_row,
    history_of,
    history_params,
    now_iso,
)

# A thread takes a connection from the pool once and keeps it (again after a failure): a
# second at most, else the server is gone and the pool is still reconnecting.
CHECKOUT_SECONDS = 1.0
FAIL_FAST_SECONDS = 1.0
# Lock ids (pg_advisory_xact_lock): the ledger's write lock, and schema creation.
WRITE_LOCK = 0x6C656467  # "ledg"
SCHEMA_LOCK = 0x6D696772  # "migr"
ROWS_PER_STATEMENT = 500
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def redact(url: str) -> str:
    """The URL without its password (for logs, errors and /status)."""
    url = _PASSWORD.sub(r"\1***@", url)
    return re.sub(r"(password=)[^&\s]*", r"\1***", url)


def _connect_error(url: str) -> str:
    """Why one connection to `url` fails now: libpq's first line (it never holds the
    password)."""
    try:
        psycopg.connect(url, **CONNECTION_KWARGS).close()
    except psycopg.Error as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return "no connection within 15 s"


CONNECTION_KWARGS = {
    "autocommit": True, "connect_timeout": 3, "application_name": "consent-gateway",
    # A server that vanishes from the network: give up on a query after 5 s
    # unacknowledged, not the kernel's 15 minutes.
    "tcp_user_timeout": 5000, "keepalives_idle": 10}


def pg(sql: str) -> str:
    """Our `?` placeholders as psycopg's `%s` (no statement of ours holds a literal ?)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresLedger(LedgerQueries):
    """The ledger in a PostgreSQL database (`url`: a libpq URL; PG* variables apply)."""

    def __init__(self, url: str, *, upgrade: bool = False, pool_size: int = 16,
                 cache: bool = False):
        self.url = url
        self.where = redact(url)
        self._failing_until = 0.0
        self._local = threading.local()
        self.commits = 0  # transactions of write_batch (for tests)
        self._held: set[psycopg.Connection] = set()  # connections kept by threads
        self._generation = 0  # one more after each connection failure
        self._held_lock = threading.Lock()
        self.pool = psycopg_pool.ConnectionPool(
            url, min_size=2, max_size=pool_size, open=False, timeout=CHECKOUT_SECONDS,
            check=psycopg_pool.ConnectionPool.check_connection, kwargs=CONNECTION_KWARGS,
            name="ledger")
        pool_log = logging.getLogger("psycopg.pool")
        level = pool_log.level
        pool_log.setLevel(logging.CRITICAL)  # each failed try: the reason is said once, below
        try:
            self.pool.open(wait=True, timeout=15)
        except psycopg_pool.PoolTimeout as exc:
            self.pool.close()
            raise StoreUnavailable(
                f"cannot connect to the ledger at {self.where}: {_connect_error(url)}; check "
                "[ledger] url and that PostgreSQL is running and reachable") from exc
        finally:
            pool_log.setLevel(level)
        try:
            self.applied = self._schema(upgrade)
        except BaseException:
            self.pool.close()
            raise
        # People's records read lately, forgotten when the ledger announces a change.
        self.cache = HistoryCache(url, CONNECTION_KWARGS) if cache else None

    # -- plumbing -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        """A connection: the open transaction's of `exclusive()` on this thread, else one
        from the pool. Connection trouble is StoreUnavailable."""
        held = getattr(self._local, "tx", None)
        if held is not None:
            yield held
            return
        if time.monotonic() < self._failing_until:
            raise StoreUnavailable(f"ledger at {self.where} unreachable (retrying shortly)")
        try:
            conn = getattr(self._local, "conn", None)
            if conn is not None and (self._local.generation != self._generation
                                     or _gone(conn)):
                self._drop_conn()  # kept from before a failure or a restart: not to be used
                conn = None
            if conn is None:  # this thread keeps one: no pool checkout per statement
                generation = self._generation  # before: a failure meanwhile makes it stale
                conn = self._local.conn = self.pool.getconn()  # checked by the pool
                self._local.generation = generation
                with self._held_lock:
                    self._held.add(conn)
            yield conn
            self._failing_until = 0.0
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise self._connection_failed(exc) from exc
        except psycopg.Error as exc:
            raise StoreUnavailable(f"ledger error: {type(exc).__name__}: "
                                   f"{exc.diag.message_primary or exc}") from exc

    def _connection_failed(self, exc: Exception) -> StoreUnavailable:
        """After connection trouble: calls fail fast for a moment, every thread takes a
        fresh connection next time, and this one's goes back to the pool (which replaces
        it, reconnecting in the background)."""
        self._failing_until = time.monotonic() + FAIL_FAST_SECONDS
        self._generation += 1
        self._drop_conn()
        return StoreUnavailable(f"ledger at {self.where} unavailable: {type(exc).__name__}")

    def _drop_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._held_lock:
                self._held.discard(conn)
            with contextlib.suppress(psycopg.Error, psycopg_pool.PoolTimeout):
                self.pool.putconn(conn)

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict]:
        with self._conn() as conn:
            cur = conn.execute(pg(sql), tuple(params))
            names = [d.name for d in cur.description or ()]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def _tuples(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._conn() as conn:
            return conn.execute(pg(sql), tuple(params)).fetchall()

    def _write(self, sql: str, params: Iterable[Any]) -> int:
        with self._conn() as conn:
            conn.execute(pg(sql), tuple(params))
        return 0

    def _schema(self, upgrade: bool) -> list[migrate.Migration]:
        with self._conn() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0]
            current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
                                   ).fetchone()[0] if exists else 0
            if current and not upgrade and (problem := migrate.mismatch(current, self.where)):
                raise problem
            conn.execute(migrate.HISTORY_TABLE)
            return migrate.apply(
                "postgresql", conn.execute, migrate.plan(current).missing,
                lambda m: conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                                       (m.version, m.name, now_iso())))

    def schema_version(self) -> int:
        return self._tuples("SELECT MAX(version) FROM schema_migrations")[0][0]

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self.pool.close(timeout=1.0)
        with self._held_lock:  # the connections threads kept (the pool closes only its own)
            held, self._held = list(self._held), set()
        for conn in held:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def healthy(self) -> bool:
        """The primary answers and takes writes (not a standby in recovery)."""
        try:
            with self.pool.connection(timeout=0.5) as conn:
                return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        except (psycopg.Error, psycopg_pool.PoolTimeout):
            return False

    @contextlib.contextmanager
    def exclusive(self):
        """The ledger's write lock for the whole block, across every gateway on this
        database: one transaction holding an advisory lock; reads in the block see it."""
        if getattr(self._local, "tx", None) is not None:
            yield  # nested: the lock is held already
            return
        with self._conn() as conn:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                    self._local.tx = conn
                    try:
                        yield
                    finally:
                        self._local.tx = None
                self._changed_people()  # committed: opt-outs, erasures may have changed
            except psycopg.OperationalError as exc:
                raise self._connection_failed(exc) from exc

    # -- evidence -----------------------------------------------------------------------

    def record_evidence(self, record: Evidence, via: str = "api") -> int:
        with self._conn() as conn:
            new_id = conn.execute(pg(EVIDENCE_INSERT) + " RETURNING id",
                                  evidence_row(record, via)).fetchone()[0]
        self._changed_people()
        return new_id

    def record_evidence_many(self, records: Iterable[Evidence], via: str = "csv") -> int:
        rows = [evidence_row(r, via) for r in records]
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(pg(EVIDENCE_INSERT), rows)
        self._changed_people()
        return len(rows)

    # -- opt-outs -----------------------------------------------------------------------

    def record_opt_out(self, org: str, channel: str, address: str, *, kind: str = "optout",
                       source: str = "", method: str = "", message_id: str | None = None,
                       client: str | None = None, token: str | None = None,
                       at: datetime | None = None, request_id: str | None = None,
                       categories: Sequence[str] = ()) -> int | None:
        """Append an opt-out (or opt-in); its time is taken once the write lock is held.
        None when a row with this `request_id` exists already."""
        with self.exclusive(), self._conn() as conn:
            when = (at or datetime.now(UTC)).isoformat(timespec="microseconds")
            row = conn.execute(pg(OPT_OUT_INSERT), (
                org, channel, address, kind, when, source, method, message_id, client, token,
                request_id, json.dumps(list(categories)))).fetchone()
            return None if row is None else row[0]

    def history(self, org: str, channel: str, address: str, suppressed_as: str = ""
                ) -> tuple[tuple[Evidence, ...], tuple[OptOut, ...]]:
        cache, key = self.cache, (org, channel, address, suppressed_as)
        if cache is not None and (found := cache.get(key)) is not None:
            return found
        changes = cache.changes() if cache is not None else 0
        found = history_of(self._tuples(HISTORY_SELECT, history_params(
            org, channel, address, suppressed_as)))
        if cache is not None:
            cache.put(key, address, found, changes)
        return found

    def _changed_people(self) -> None:
        """After a write of evidence, opt-outs or erasures by this process: what the cache
        holds may be stale now (others learn it from the ledger's notices)."""
        if self.cache is not None:
            self.cache.forget_all()

    # -- privacy (see ledger/privacy.py) ------------------------------------------------

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> tuple[int, list[tuple]]:
        with self._conn() as conn:
            cur = conn.execute(pg(sql), tuple(params))
            return cur.rowcount, (cur.fetchall() if cur.description else [])

    async def ahistory(self, org: str, channel: str, address: str, suppressed_as: str = ""
                       ) -> tuple[tuple[Evidence, ...], tuple[OptOut, ...]]:
        """`history` from the event loop: read right there, on this thread's connection
        (measured against psycopg's AsyncConnection, which cost more CPU per read than the
        loop waits: docs/decisions.md, "Shared ledger")."""
        return self.history(org, channel, address, suppressed_as)

    # -- decisions and tokens -------------------------------------------------------------

    def write_batch(self, tokens: Sequence[TokenRecord] = (),
                    decisions: Sequence[tuple[Decision, DecisionRecord]] = ()) -> list[int]:
        """Tokens and decisions in one transaction; the decisions' ids, in order."""
        at = now_iso()
        if len(tokens) <= ROWS_PER_STATEMENT and 0 < len(decisions) <= ROWS_PER_STATEMENT:
            ids = self._write_one_statement(tokens, decisions, at)
            self.commits += 1
            return ids
        with self._conn() as conn, conn.transaction():
            ids: list[int] = []
            if decisions:
                ids = [r[0] for r in conn.execute(
                    "SELECT nextval(pg_get_serial_sequence('decisions', 'id')) "
                    "FROM generate_series(1, %s)", (len(decisions),)).fetchall()]
            token_rows = [(t.id, t.org, t.channel, t.address, t.stream, t.message_id,
                           t.reply_to, at) for t in tokens]
            insert_rows(conn, "INSERT INTO tokens VALUES ", token_rows)
            insert_rows(conn, DECISION_INSERT, [_decision_row(i, at, d, what)
                                                for i, (d, what) in zip(ids, decisions)])
        self.commits += 1
        return ids

    def _write_one_statement(self, tokens: Sequence[TokenRecord],
                             decisions: Sequence[tuple[Decision, DecisionRecord]],
                             at: str) -> list[int]:
        """Tokens and decisions as one statement (its own transaction: one round trip),
        the tokens in a data-modifying WITH; the decisions' ids come back in VALUES order
        (PostgreSQL returns an INSERT's rows in the order inserted, as Django's
        bulk_create relies on)."""
        params: list = []
        sql = ""
        if tokens:
            sql = "WITH t AS (INSERT INTO tokens VALUES " + ",".join(  # noqa: S608
                ["(%s,%s,%s,%s,%s,%s,%s,%s)"] * len(tokens)) + ") "
            params += [v for t in tokens for v in (t.id, t.org, t.channel, t.address, t.stream,
                                                    t.message_id, t.reply_to, at)]
        sql += DECISION_INSERT_NO_ID + ",".join(["(" + ",".join(["%s"] * DECISION_VALUES) + ")"]
                                                 * len(decisions)) + " RETURNING id"
        params += [v for d, what in decisions for v in _decision_row(0, at, d, what)[1:]]
        with self._conn() as conn:
            return [r[0] for r in conn.execute(sql, params).fetchall()]

    def try_write_now(self, tokens: Sequence[TokenRecord] = (),
                      decisions: Sequence[tuple[Decision, DecisionRecord]] = ()
                      ) -> list[int] | None:
        """Never on the event loop: a round trip to the server would hold it up."""
        return None

    def checkpoint_due(self) -> bool:
        return False

    def checkpoint(self) -> None:
        """PostgreSQL checkpoints by itself."""

    # -- export -------------------------------------------------------------------------

    def iter_all(self, table: str) -> Iterator[dict]:
        if table not in (*TABLES, "gateways", "schema_migrations"):
            raise ValueError(f"no table {table!r} in the ledger")
        with self._conn() as conn, conn.transaction(), \
                conn.cursor(name=f"all_{table}") as cur:
            cur.itersize = 2000
            cur.execute(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608 - checked above
            names = None
            for row in cur:
                names = names or [d.name for d in cur.description]
                yield dict(zip(names, row))


DECISION_INSERT_NO_ID = DECISION_INSERT.replace("(id, ", "(", 1)


def _gone(conn: psycopg.Connection) -> bool:
    """A kept connection the server closed while it sat idle (a restart, a
    pg_terminate_backend): its socket has something to read, which an idle connection
    never has but for the server's goodbye. One poll, no round trip."""
    if conn.closed or conn.broken:
        return True
    poller = select.poll()
    try:
        poller.register(conn.fileno(), select.POLLIN)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(poller.poll(0))


def insert_rows(conn: psycopg.Connection, head: str, rows: Sequence[tuple]) -> None:
    """INSERT many rows, ROWS_PER_STATEMENT per statement (`head` ends with VALUES)."""
    if not rows:
        return
    group = "(" + ",".join(["%s"] * len(rows[0])) + ")"
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        part = rows[start:start + ROWS_PER_STATEMENT]
        conn.execute(head + ",".join([group] * len(part)), [v for r in part for v in r])

