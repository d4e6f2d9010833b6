"""`gateway ledger copy`: an SQLite ledger into an empty PostgreSQL one, every record with
its id and times, in one transaction per table through PostgreSQL's COPY."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import GatewayError
from .postgres import PostgresLedger
from .queries import TABLES
from .store import Ledger


class TargetNotEmpty(GatewayError):
    """The target ledger already holds records: copying would mix two histories."""


def columns(source: Ledger, table: str) -> list[str]:
    return [r["name"] for r in source._rows(f"PRAGMA table_info({table})")]


def count(source: Ledger, table: str) -> int:
    return source._tuples(f"SELECT COUNT(*) FROM {table}")[0][0]  # noqa: S608 - our names


def key_fingerprint(ledger: Ledger | PostgresLedger) -> str | None:
    """The fingerprint of the suppression key the ledger's erasures are made with, if noted."""
    found = ledger._tuples("SELECT fingerprint FROM suppression_key WHERE id = 1")
    return found[0][0] if found else None


def copy_ledger(source: Ledger, target: PostgresLedger,
                progress: Callable[[str, int], None] = lambda table, n: None) -> dict[str, int]:
    """Copy every table of `source` into `target`; the number of rows per table. Refuses a
    target that holds any record (TargetNotEmpty) before writing anything."""
    held = {t: n for t in TABLES if (n := target._tuples(
        f"SELECT COUNT(*) FROM {t}")[0][0])}  # noqa: S608 - our names
    # A gateway started on the empty target noted its key: not a record when it is the
    # source's key (another key would lose the source's erasures: refused).
    target_key = key_fingerprint(target)
    if target_key is not None and key_fingerprint(source) in (None, target_key):
        held.pop("suppression_key", None)
    if held:
        raise TargetNotEmpty(f"the ledger at {target.where} is not empty ("
                             + ", ".join(f"{n} {t}" for t, n in held.items())
                             + "); copy into a blank or newly migrated database")
    copied: dict[str, int] = {}
    with target._conn() as conn:
        for table in TABLES:
            if table == "suppression_key" and target_key is not None:
                copied[table] = 0
                continue
            names = columns(source, table)
            n = 0
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN") as copy:
                    for row in source.conn.execute(
                            f"SELECT {', '.join(names)} FROM {table} ORDER BY rowid"):  # noqa: S608
                        copy.write_row(row)
                        n += 1
                        if n % 10_000 == 0:
                            progress(table, 10_000)
                progress(table, n % 10_000)
                # identity columns go on from the top (tokens and sign-ups have text ids)
                if "id" in names and table not in ("tokens", "subscriptions"):
                    top = f"(SELECT MAX(id) FROM {table})"  # noqa: S608 - our names
                    cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                f"GREATEST({top}, 1), {top} IS NOT NULL)")
            copied[table] = n
        for table in TABLES:  # plans from real statistics at once, not after autovacuum
            conn.execute(f"ANALYZE {table}")
    return copied
