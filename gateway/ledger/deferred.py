"""Deferred texts (docs/rulesets.md, "A third outcome: defer"): a text the recipient's rule
set says may not arrive now (reason `quiet_hours`) is held here, in the gateway's own
data_dir, until its `send_at`; then it is decided again and sent, or dropped.

Its own SQLite file (WAL, synchronous=FULL: a text answered "deferred" survives a crash).
Every process of a gateway may open it; a text is claimed by one (`claim`) before it is
sent, and a claim that was never finished (a crash mid-send) is taken up again after
`CLAIM_TIMEOUT` seconds: at least once, never lost."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreUnavailable
from . import sqlitefile

FILENAME = "deferred-texts.db"
CLAIM_TIMEOUT = 300.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS deferred_texts (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,      -- ours, as in the audit log
    stream TEXT NOT NULL, org TEXT NOT NULL,
    to_number TEXT NOT NULL, from_sender TEXT NOT NULL,
    body TEXT NOT NULL,            -- as the app sent it: brand and opt-out added when sent
    purpose TEXT NOT NULL, nature TEXT NOT NULL, category TEXT,
    status_callback TEXT,
    created_at REAL NOT NULL, send_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'waiting',   -- waiting | sending
    claimed_at REAL
);
CREATE INDEX IF NOT EXISTS deferred_due ON deferred_texts (status, send_at);
CREATE INDEX IF NOT EXISTS deferred_person ON deferred_texts (to_number, org);
"""
COLUMNS = ("id, message_id, stream, org, to_number, from_sender, body, purpose, nature, "
           "category, status_callback, created_at, send_at")


@dataclass(frozen=True)
class DeferredText:
    """A text waiting for its time; `id` 0 until held."""

    message_id: str
    stream: str
    org: str
    to: str
    from_: str
    body: str
    purpose: str
    nature: str
    category: str | None
    status_callback: str | None
    created_at: float
    send_at: float
    id: int = 0


class DeferredTexts:
    """The held texts of one data_dir. Each method is one short transaction."""

    def __init__(self, data_dir: Path | str):
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / FILENAME
        self._lock = threading.Lock()
        # secure_delete: an erased person's texts are gone from the file, not only from
        # queries.
        self.conn = sqlitefile.connect(self.path)
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def _run(self, sql: str, params=()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self.conn.execute(sql, params)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"deferred texts: {exc}") from exc

    def hold(self, text: DeferredText) -> int:
        """Keep `text` until its send_at (committed and fsync'd on return); its id."""
        cur = self._run(
            "INSERT INTO deferred_texts (message_id, stream, org, to_number, from_sender, "
            "body, purpose, nature, category, status_callback, created_at, send_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (text.message_id, text.stream, text.org, text.to, text.from_, text.body,
             text.purpose, text.nature, text.category, text.status_callback,
             text.created_at, text.send_at))
        return int(cur.lastrowid)

    def due(self, now: float | None = None, limit: int = 100) -> list[DeferredText]:
        """Texts whose time has come (and claims abandoned for CLAIM_TIMEOUT)."""
        now = time.time() if now is None else now
        rows = self._run(
            f"SELECT {COLUMNS} FROM deferred_texts WHERE (status = 'waiting' AND send_at <= ?)"  # noqa: S608
            " OR (status = 'sending' AND claimed_at < ?) ORDER BY send_at, id LIMIT ?",
            (now, now - CLAIM_TIMEOUT, limit)).fetchall()
        return [_text(r) for r in rows]

    def claim(self, text_id: int, now: float | None = None) -> bool:
        """Take a due text for sending; False when another process has it (or it is gone)."""
        now = time.time() if now is None else now
        cur = self._run(
            "UPDATE deferred_texts SET status = 'sending', claimed_at = ? WHERE id = ? AND "
            "(status = 'waiting' OR (status = 'sending' AND claimed_at < ?))",
            (now, text_id, now - CLAIM_TIMEOUT))
        return cur.rowcount == 1

    def reschedule(self, text_id: int, send_at: float) -> None:
        """Back to waiting until `send_at` (deferred again, or the provider failed)."""
        self._run("UPDATE deferred_texts SET status = 'waiting', claimed_at = NULL, "
                  "send_at = ? WHERE id = ?", (send_at, text_id))

    def done(self, text_id: int) -> None:
        """Sent or dropped: the text leaves the store (the audit log has its decision)."""
        self._run("DELETE FROM deferred_texts WHERE id = ?", (text_id,))

    def erase_texts(self, address: str, org: str | None = None) -> int:
        """Delete every text held for `address` (normalised, E.164), of `org` or of every
        org: for an erasure. Returns how many were deleted."""
        if org is None:
            cur = self._run("DELETE FROM deferred_texts WHERE to_number = ?", (address,))
        else:
            cur = self._run("DELETE FROM deferred_texts WHERE to_number = ? AND org = ?",
                            (address, org))
        with contextlib.suppress(StoreUnavailable):
            self._run("PRAGMA wal_checkpoint(TRUNCATE)")
        return cur.rowcount

    def stats(self) -> dict:
        """How many texts are held and when the next is due (Unix time, or None)."""
        count, first = self._run("SELECT COUNT(*), MIN(send_at) FROM deferred_texts"
                                 ).fetchone()
        return {"count": count, "next_send_at": first}


def _text(r) -> DeferredText:
    return DeferredText(message_id=r[1], stream=r[2], org=r[3], to=r[4], from_=r[5],
                        body=r[6], purpose=r[7], nature=r[8], category=r[9],
                        status_callback=r[10], created_at=r[11], send_at=r[12], id=r[0])
