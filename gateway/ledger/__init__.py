"""The ledger (evidence, opt-outs, decisions, tokens) on SQLite or PostgreSQL, and the
local spool."""

from pathlib import Path

from .addresses import guess_channel, mask, normalise, normalise_email, normalise_phone
from .migrate import SchemaMismatch
from .records import FIELDS, parse_evidence, parse_time
from .store import DecisionRecord, Ledger, TokenRecord, now_iso


def open_ledger(url: str, data_dir: Path | str, *, upgrade: bool = False):
    """The ledger `[ledger] url` names: "" is ledger.db in `data_dir`, sqlite:///PATH that
    file, postgresql://… a PostgreSQL database. Creates the schema in an empty database;
    raises SchemaMismatch for one at another version, unless `upgrade` (gateway migrate)."""
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres import PostgresLedger  # psycopg is imported only by its users
        return PostgresLedger(url, upgrade=upgrade)
    path = Path(url.removeprefix("sqlite:///")) if url else Path(data_dir) / "ledger.db"
    return Ledger(path.parent, path.name, upgrade=upgrade)

__all__ = [
    "FIELDS", "DecisionRecord", "Ledger", "SchemaMismatch", "TokenRecord", "guess_channel",
    "mask", "normalise", "normalise_email", "normalise_phone", "now_iso", "open_ledger",
    "parse_evidence", "parse_time",
]
