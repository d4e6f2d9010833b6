"""The ledger (evidence, opt-outs, decisions, tokens) on SQLite or PostgreSQL, and the
local spool: the one place that knows SQL. What a record must be (addresses in their
canonical form, valid evidence) is decided before it gets here: gateway/addresses.py and
gateway/evidence.py."""

from pathlib import Path

from .migrate import SchemaMismatch
from .store import DecisionRecord, Ledger, TokenRecord, now_iso


def open_ledger(url: str, data_dir: Path | str, *, upgrade: bool = False,
                cache: bool = False):
    """The ledger `[ledger] url` names: "" is ledger.db in `data_dir`, sqlite:///PATH that
    file, postgresql://… a PostgreSQL database. Creates the schema in an empty database;
    raises SchemaMismatch for one at another version, unless `upgrade` (gateway migrate).
    `cache`: a running gateway's PostgreSQL ledger keeps people's records read lately
    (ledger/cache.py); commands and tools read every time."""
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres import PostgresLedger  # psycopg is imported only by its users
        return PostgresLedger(url, upgrade=upgrade, cache=cache)
    path = Path(url.removeprefix("sqlite:///")) if url else Path(data_dir) / "ledger.db"
    return Ledger(path.parent, path.name, upgrade=upgrade)



__all__ = ["DecisionRecord", "Ledger", "SchemaMismatch", "TokenRecord", "now_iso", "open_ledger"]
