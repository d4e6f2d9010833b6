"""Opt-outs that arrived while the ledger could not be written (PostgreSQL down, say):
kept in `data_dir/pending-optouts.db` (SQLite, every commit fsync'd) until they are in the
ledger. Each carries its own request id, so one written twice (a crash between writing it
to the ledger and deleting it here) is recorded once. An erasure removes the person's kept
requests too (`erase`), and what is deleted is overwritten (`secure_delete`), the log
truncated: an erased address does not linger in the file."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from pathlib import Path

from ..errors import StoreUnavailable
from ..policy import ALL_CHANNELS, ALL_ORGS
from . import sqlitefile
from .queries import now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY, queued_at TEXT NOT NULL, request TEXT NOT NULL
);
"""


class PendingOptOuts:
    """A durable first-in first-out list of opt-out requests (plain dicts)."""

    def __init__(self, data_dir: Path | str):
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / "pending-optouts.db"
        self._lock = threading.Lock()
        self.conn = sqlitefile.connect(self.path)
        self.conn.executescript(SCHEMA)
        self.count = self._count()

    def _count(self) -> int:
        with self._lock:
            return self.conn.execute("SELECT COUNT(*) FROM pending").fetchone()[0]

    def add(self, request: dict) -> dict:
        """Keep `request` (given a request id if it has none); the request as kept."""
        request = {**request, "request_id": request.get("request_id") or
                   f"pending:{uuid.uuid4().hex}"}
        try:
            with self._lock:
                self.conn.execute("INSERT INTO pending (queued_at, request) VALUES (?, ?)",
                                  (now_iso(), json.dumps(request)))
                self.count += 1
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot keep the opt-out in {self.path}: {exc}") from exc
        return request

    def oldest(self, limit: int = 100) -> list[tuple[int, str, dict]]:
        """Up to `limit` kept requests, oldest first: (id, when kept, request)."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT id, queued_at, request FROM pending ORDER BY id LIMIT ?",
                (limit,)).fetchall()
            if not rows:  # another process (`gateway erase`) may have removed some
                self.count = 0
        return [(i, at, json.loads(text)) for i, at, text in rows]

    def remove(self, pending_id: int) -> None:
        with self._lock:
            gone = self.conn.execute("DELETE FROM pending WHERE id = ?", (pending_id,)).rowcount
            self.count = max(0, self.count - gone)

    def erase(self, channel: str, address: str, org: str) -> int:
        """Remove the kept requests of one person (`address` normalised, on `channel`, or
        their "all channels" ones) for `org` or every org ("*"), as the ledger's erasure
        does (an org's erasure keeps their requests for every org); how many went."""
        with self._lock:
            rows = self.conn.execute("SELECT id, request FROM pending").fetchall()
            doomed = []
            for pending_id, text in rows:
                request = json.loads(text)
                if (request.get("address") == address
                        and request.get("channel") in (channel, ALL_CHANNELS)
                        and (org == ALL_ORGS or request.get("org") == org)):
                    doomed.append(pending_id)
            if not doomed:
                return 0
            try:
                self.conn.executemany("DELETE FROM pending WHERE id = ?",
                                      [(i,) for i in doomed])
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot erase from {self.path}: {exc}") from exc
            self.count = max(0, self.count - len(doomed))
        return len(doomed)

    def close(self) -> None:
        with self._lock:
            self.conn.close()
