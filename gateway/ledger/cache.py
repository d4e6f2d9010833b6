"""People's records read lately from a PostgreSQL ledger, kept while the ledger says they
have not changed: a decision for someone decided a moment ago (the re-decision before
delivery, a text after an email, the next message of a campaign) needs no round trip.

How it stays right (the contract allows a cache to be stale for at most 1 s):

- The ledger announces every committed change to a person's evidence, opt-outs or
  erasures on `ledger_changes` (migration 0008: the md5 of the address, or `*`). A thread
  of this process LISTENs on its own connection and forgets what changed.
- That thread proves it is keeping up: every SYNC_SECONDS it makes a round trip on the
  listening connection; notices of transactions committed before a round trip started
  have been read by the time the next one has finished. The cache answers only while the
  round trip before the last one started less than FRESH_SECONDS ago: if the listener
  falls behind, loses its connection or the server goes, the cache stops answering at
  once and every decision reads the ledger (and fails closed if it cannot).
- A read that raced with a change is not kept: a record is stored only if nothing was
  forgotten between the start of its read and its storing (one counter).
- This process's own writes forget everything at once (`forget_all`), before the write
  returns: what a person did through this gateway counts on its next decision here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable

import psycopg

from ..logs import event

log = logging.getLogger("gateway.ledger")

CHANNEL = "ledger_changes"
FRESH_SECONDS = 1.0  # the contract's bound on a cache's staleness
SYNC_SECONDS = 0.2
MAX_PEOPLE = 50_000


def digest(address: str) -> str:
    """What the ledger announces for a changed person (md5 of the address, as PostgreSQL's
    md5() of the same UTF-8 text)."""
    return hashlib.md5(address.encode("utf-8"), usedforsecurity=False).hexdigest()


class HistoryCache:
    """`history` answers by (org, channel, address, suppressed_as), forgotten on change."""

    def __init__(self, url: str, connect_kwargs: dict, max_people: int = MAX_PEOPLE):
        self.url = url
        self.connect_kwargs = {**connect_kwargs, "application_name": "consent-gateway-listener"}
        self.max_people = max_people
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple] = OrderedDict()
        self._by_person: dict[str, set[Hashable]] = {}
        self._changes = 0  # how many times something was forgotten
        self._fresh_until = 0.0  # monotonic: answers only before this
        self._stop = threading.Event()
        self.hits = self.misses = 0
        self._thread = threading.Thread(target=self._listen, name="ledger-listener",
                                        daemon=True)
        self._thread.start()

    # -- answering ------------------------------------------------------------------------

    def get(self, key: Hashable) -> tuple | None:
        if time.monotonic() >= self._fresh_until:
            return None
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
            return found

    def changes(self) -> int:
        """Take before reading the ledger; give to `put` with what was read."""
        return self._changes

    def put(self, key: Hashable, address: str, value: tuple, changes_before: int) -> None:
        if time.monotonic() >= self._fresh_until:
            return
        with self._lock:
            if self._changes != changes_before:
                return  # something changed while it was read: it may be stale already
            self._entries[key] = value
            self._entries.move_to_end(key)
            self._by_person.setdefault(digest(address), set()).add(key)
            while len(self._entries) > self.max_people:
                old, _ = self._entries.popitem(last=False)
                self._unindex(old)

    def _unindex(self, key: Hashable) -> None:
        person = digest(key[2])
        keys = self._by_person.get(person)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_person[person]

    # -- forgetting -----------------------------------------------------------------------

    def forget(self, person: str) -> None:
        """A notice: `person` (a digest) changed, or `*`: anyone may have."""
        with self._lock:
            self._changes += 1
            if person == "*":
                self._entries.clear()
                self._by_person.clear()
                return
            for key in self._by_person.pop(person, ()):
                self._entries.pop(key, None)

    def forget_all(self) -> None:
        self.forget("*")

    def _stale(self) -> None:
        """Not keeping up: answer nothing, keep nothing, until proven fresh again."""
        self._fresh_until = 0.0
        self.forget_all()

    # -- listening ------------------------------------------------------------------------

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, **self.connect_kwargs) as conn:
                    conn.add_notify_handler(lambda notice: self.forget(notice.payload))
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._stale()  # changes made while nobody listened are unknown
                    before_last = None
                    while not self._stop.is_set():
                        started = time.monotonic()
                        conn.execute("SELECT 1")  # reads every notice sent before it
                        if before_last is not None:
                            self._fresh_until = before_last + FRESH_SECONDS
                        before_last = started
                        self._stop.wait(SYNC_SECONDS)
            except psycopg.Error as exc:
                self._stale()
                event(log, "ledger_cache_listener_lost", logging.WARNING,
                      error=type(exc).__name__)
                self._stop.wait(1.0)
        self._stale()

    def close(self) -> None:
        self._stop.set()
        self._stale()
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=2.0)
