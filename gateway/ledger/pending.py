"""Opt-outs that arrived while the ledger could not be written (PostgreSQL down, say):
kept in `data_dir/pending-optouts.db` (SQLite, every commit fsync'd) until they are in the
ledger. Each carries its own request id, so one written twice (a crash between writing it
to the ledger and deleting it here) is recorded once."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from pathlib import Path

from ..errors import StoreUnavailable
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
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                    timeout=5.0)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
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

    def oldest(self, limit: int = 100) -> list[tuple[int, dict]]:
        with self._lock:
            rows = self.conn.execute("SELECT id, request FROM pending ORDER BY id LIMIT ?",
                                     (limit,)).fetchall()
        return [(i, json.loads(text)) for i, text in rows]

    def remove(self, pending_id: int) -> None:
        with self._lock:
            self.conn.execute("DELETE FROM pending WHERE id = ?", (pending_id,))
            self.count -= 1

    def close(self) -> None:
        with self._lock:
            self.conn.close()
