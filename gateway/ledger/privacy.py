"""The ledger's part of privacy (docs/privacy.md), the same on both backends: erasing one
person (every record of theirs gone, one suppression entry kept in its place, in one
transaction), the key check of the suppression entries, and retention's batched deletion
of old decisions. Mixed into `LedgerQueries`; each backend provides `exclusive()`,
`_execute` (a statement inside it) and `_after_erasure` (making deleted bytes go)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..policy import ALL_ORGS

# What an erasure removes from the ledger, by table: (answer key, statement). `{scope}` is
# "" for every org, else " AND org = ?". A person's "all channels" opt-out is theirs too.
# An org's erasure keeps the person's opt-outs for every org ("*", from STOPALL): they
# still protect the person from the other orgs.
ERASE_STATEMENTS = (
    ("evidence", "DELETE FROM evidence WHERE address = ? AND channel = ?{scope}"),
    ("opt_outs", "DELETE FROM optouts WHERE address = ? AND channel IN (?, 'all'){scope}"),
    ("tokens", "DELETE FROM tokens WHERE address = ? AND channel = ?{scope}"),
    # The decisions stay (counts on /status, the org's audit of what it sent); the
    # address in them goes.
    ("decisions", "UPDATE decisions SET address = '' WHERE address = ? AND channel = ?{scope}"),
    # Events an ESP or a mailbox provider sent about them (email only; those kept for the
    # operator because they named no org go with any org's erasure).
    ("outside_events", "DELETE FROM optout_events WHERE address = ? AND ? = 'email'"
                       "{scope_or_unknown}"),
)
SUPPRESSION_INSERT = ("INSERT INTO suppressions (hash, channel, org, at, source, removed) "
                      "VALUES (?,?,?,?,?,?) RETURNING id")


@dataclass(frozen=True)
class Erased:
    """What one erasure did: rows removed per kind, and the suppression entry kept."""

    suppression_id: int
    new: bool  # False: nothing was left to remove and the entry existed already
    at: str
    removed: dict[str, int] = field(default_factory=dict)


class PrivacyQueries:
    """Erasure, the suppression key check and retention (see module docstring)."""

    def exclusive(self):
        raise NotImplementedError

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> tuple[int, list[tuple]]:
        """One statement inside `exclusive()`: (rows changed, rows returned)."""
        raise NotImplementedError

    def _after_erasure(self) -> None:
        """Once an erasure is committed: make the deleted bytes leave the files."""

    def _tuples(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def erase(self, channel: str, address: str, org: str, suppressed_as: str,
              source: str) -> Erased:
        """Remove every evidence record, opt-out, token and decision address of one person
        (`address` normalised, on `channel`) for `org` (or every org, "*"), and keep one
        suppression entry (`suppressed_as`: the keyed hash) in their place, all in one
        transaction. Idempotent: with nothing left to remove and an entry for this scope
        already there, it records nothing new and answers that entry."""
        scope = "" if org == ALL_ORGS else " AND org = ?"
        scope_or_unknown = "" if org == ALL_ORGS else " AND (org = ? OR org IS NULL)"
        with self.exclusive():
            at = datetime.now(UTC).isoformat(timespec="microseconds")
            removed = {}
            for name, statement in ERASE_STATEMENTS:
                params = [address, channel] + ([] if org == ALL_ORGS else [org])
                removed[name] = self._execute(statement.format(
                    scope=scope, scope_or_unknown=scope_or_unknown), params)[0]
            existing = self._execute(
                "SELECT id, at FROM suppressions WHERE hash = ? AND channel = ? AND org = ? "
                "ORDER BY id DESC LIMIT 1", [suppressed_as, channel, org])[1]
            if existing and not any(removed.values()):
                return Erased(int(existing[0][0]), False, existing[0][1], removed)
            new_id = self._execute(SUPPRESSION_INSERT, [
                suppressed_as, channel, org, at, source, json.dumps(removed)])[1][0][0]
        self._after_erasure()
        return Erased(int(new_id), True, at, removed)

    def erasures_for(self, suppressed_as: str, org: str | None = None) -> list[dict]:
        """The erasures of one person (by keyed hash), oldest first, as the audit shows
        them: when, for which org scope and channel, on whose word, what was removed."""
        sql, params = ("SELECT id, at, org, channel, source, removed FROM suppressions "
                       "WHERE hash = ?", [suppressed_as])
        if org:
            sql, params = sql + " AND org IN (?, ?)", params + [org, ALL_ORGS]
        return [{"id": r[0], "at": r[1], "org": r[2], "channel": r[3], "source": r[4],
                 "removed": json.loads(r[5])}
                for r in self._tuples(sql + " ORDER BY id", params)]

    def suppression_fingerprint(self, fingerprint: str) -> str:
        """The fingerprint of the key this ledger's suppression entries are made with:
        `fingerprint` itself when the ledger had none yet (it is recorded now)."""
        found = self._tuples("SELECT fingerprint FROM suppression_key WHERE id = 1")
        if found:
            return found[0][0]
        with self.exclusive():
            found = self._execute("SELECT fingerprint FROM suppression_key WHERE id = 1")[1]
            if found:
                return found[0][0]
            self._execute("INSERT INTO suppression_key VALUES (1, ?, ?)",
                          [fingerprint, datetime.now(UTC).isoformat()])
        return fingerprint

    def delete_decisions_before(self, before: str, limit: int) -> int:
        """Delete up to `limit` of the oldest decisions made before `before` (ISO time),
        in one short transaction (the index on `at` finds them); how many went."""
        with self.exclusive():
            return self._execute(
                "DELETE FROM decisions WHERE id IN (SELECT id FROM decisions "
                "WHERE at < ? ORDER BY at LIMIT ?)", [before, int(limit)])[0]
