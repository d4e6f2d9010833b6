"""Opening the gateway's own SQLite files (ledger, spool, kept opt-outs, deferred texts)
the one way: WAL mode, a busy wait, and overwritten deletes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def connect(path: Path | str, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection for any thread (each caller serialises its use), in autocommit mode:
    WAL, `synchronous` (FULL: every commit fsync'd), waiting up to 5 s for a lock, and
    `secure_delete` (a deleted row is overwritten in the file, not left in a free page:
    docs/privacy.md)."""
    conn = sqlite3.connect(path, check_same_thread=False, timeout=5.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=5000")
    enable_wal(conn)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA secure_delete=ON")
    return conn


def enable_wal(conn: sqlite3.Connection, tries: int = 50) -> None:
    """WAL mode. Switching a new file to it takes the whole file for a moment, and SQLite
    answers "locked" at once (no busy wait) to a process that opens it meanwhile (worker
    processes or gateways starting together): try again for a few seconds."""
    for attempt in range(tries):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.1)
