"""What both ledger backends share: the records they read and write, the SQL of every
query (written with `?` placeholders; the PostgreSQL backend turns them into `%s`), and the
read methods built on two primitives each backend provides: `_rows` (dicts) and `_tuples`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..policy import ALL_ORGS, Decision, Evidence, OptOut
from ..policy.reasons import ERASED
from .privacy import PrivacyQueries

TABLES = ("evidence", "optouts", "decisions", "tokens",  # what the ledger holds, in copy order
          "optout_events", "webhook_nonces", "suppressions", "suppression_key",
          "subscriptions")
GATEWAY_COLUMNS = ("id", "host", "smtp_listen", "http_listen", "data_dir", "version",
                   "started_at", "heartbeat_at", "spool_depth", "oldest_queued_at", "health")
GATEWAY_UPSERT = (
    f"INSERT INTO gateways ({', '.join(GATEWAY_COLUMNS)}) "  # noqa: S608 - our column names
    f"VALUES ({', '.join('?' * len(GATEWAY_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{n} = excluded.{n}" for n in GATEWAY_COLUMNS if n not in ("id", "started_at")))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class TokenRecord:
    """Who an unsubscribe token stands for (never put in the token itself)."""

    id: str
    org: str
    channel: str
    address: str
    stream: str | None
    message_id: str | None
    reply_to: str | None


@dataclass(frozen=True)
class DecisionRecord:
    """What `record_decision` needs besides the Decision itself."""

    org: str
    channel: str
    address: str
    stream: str | None
    purpose: str
    nature: str
    category: str | None
    message_id: str | None
    mode: str


EVIDENCE_COLUMNS = ("id", "org", "channel", "address", "basis", "obtained_at", "source",
                    "categories", "context", "collected_by", "opt_out_offered", "named_orgs",
                    "region", "relationship", "relationship_ended_at", "written",
                    "confirmed_at")


EVIDENCE_SELECT = f"SELECT {', '.join(EVIDENCE_COLUMNS)} FROM evidence"  # noqa: S608


# One person's evidence (kind 0, EVIDENCE_COLUMNS), opt-outs (kind 1: id, org, channel,
# address, at, kind, source, method, categories) and erasures (kind 2, the same columns
# from their suppression entries, found by keyed hash). Put in id order by the caller:
# an ORDER BY here makes SQLite build two temporary b-trees per lookup (a quarter of
# its cost) to sort a few rows.
HISTORY_SELECT = (
    f"SELECT 0, {', '.join(EVIDENCE_COLUMNS)} FROM evidence "  # noqa: S608
    "WHERE address = ? AND channel = ? AND org = ? "
    "UNION ALL SELECT 1, id, org, channel, address, at, kind, source, method, "
    "categories, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL "
    "FROM optouts WHERE address = ? AND org IN (?, ?) "
    "UNION ALL SELECT 2, id, org, channel, '', at, 'erased', source, '', "
    "'[]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL "
    "FROM suppressions WHERE hash = ?")


def history_params(org: str, channel: str, address: str, suppressed_as: str) -> tuple:
    """HISTORY_SELECT's parameters ("" as `suppressed_as` finds no erasure). Erasures are
    read for every org scope (one index probe, not two; there are seldom more than one):
    the rules keep those that cover the message's org."""
    return (address, channel, org, address, org, ALL_ORGS, suppressed_as)


def _kind_and_id(row: tuple) -> tuple[int, int]:
    return row[0], row[1]


def _evidence_of(r: tuple) -> Evidence:
    """An Evidence from a row of EVIDENCE_COLUMNS."""
    return Evidence(
        id=str(r[0]), org=r[1], channel=r[2], address=r[3], basis=r[4],
        obtained_at=_time(r[5]), source=r[6], categories=_names(r[7]),
        context=r[8], collected_by=r[9],
        opt_out_offered=None if r[10] is None else bool(r[10]),
        named_orgs=_names(r[11]), region=r[12], relationship=r[13],
        relationship_ended_at=None if r[14] is None else _time(r[14]),
        written=bool(r[15]), confirmed_at=None if r[16] is None else _time(r[16]))


def _names(text: str) -> tuple[str, ...]:
    """A JSON list column (categories, named_orgs) as a tuple; most are empty."""
    return () if text == "[]" else tuple(json.loads(text))


DECISION_INSERT = (
    "INSERT INTO decisions (id, at, org, stream, channel, address, purpose, nature, category, "
    "allowed, outcome, reason, evidence_id, message_id, mode, ruleset, explanation, region, "
    "region_source) VALUES ")
DECISION_VALUES = 18  # the columns above, besides id


# An opt-out (or opt-in); a second row with the same request_id is not written (None back).
OPT_OUT_INSERT = (
    "INSERT INTO optouts (org, channel, address, kind, at, source, method, message_id, "
    "client, token, request_id, categories) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (request_id) DO NOTHING RETURNING id")

EVIDENCE_INSERT = (
    "INSERT INTO evidence (org, channel, address, basis, obtained_at, source, categories, "
    "context, collected_by, opt_out_offered, named_orgs, recorded_at, recorded_via, "
    "region, relationship, relationship_ended_at, written, confirmed_at) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")


def evidence_row(r: Evidence, via: str) -> tuple:
    """The values of EVIDENCE_INSERT for one validated record."""
    return (
        r.org, r.channel, r.address, r.basis, r.obtained_at.isoformat(), r.source,
        json.dumps(list(r.categories)), r.context, r.collected_by,
        None if r.opt_out_offered is None else int(r.opt_out_offered),
        json.dumps(list(r.named_orgs)), now_iso(), via,
        r.region, r.relationship, _iso(r.relationship_ended_at), int(r.written),
        _iso(r.confirmed_at),
    )


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _decision_row(decision_id: int, at: str, decision: Decision, what: DecisionRecord) -> tuple:
    """`at` (the write) stands in only for a decision that does not say when it was made."""
    if decision.decided_at is not None:
        at = decision.decided_at.astimezone(UTC).isoformat(timespec="microseconds")
    outcome = decision.outcome
    if not decision.allowed and what.mode == "monitor":
        outcome = "would_block"
    # A decision about an erased person does not bring their address back into the ledger.
    address = "" if decision.reason == ERASED else what.address
    return (decision_id, at, what.org, what.stream, what.channel, address, what.purpose,
            what.nature, what.category, int(decision.allowed), outcome, decision.reason,
            decision.evidence_id, what.message_id, what.mode, decision.ruleset,
            decision.explanation, decision.region, decision.region_source)


class History(tuple):
    """One person's (evidence, opt-outs) as read from the ledger. What is worked out from
    exactly these records may be kept on it (`kept`, see ConsentService): it then lives as
    long as the ledger's cache keeps the records, and goes with them when they change."""

    @property
    def kept(self) -> dict:
        return self.__dict__


def history_of(rows: list[tuple]) -> History:
    """The rows of HISTORY_SELECT as (evidence, opt-outs), each in id order."""
    rows.sort(key=_kind_and_id)
    evidence = tuple(_evidence_of(r[1:]) for r in rows if r[0] == 0)
    optouts = tuple(OptOut(str(r[1]), r[2], r[3], r[4], _time(r[5]), r[6], r[7], r[8],
                           _names(r[9])) for r in rows if r[0] != 0)
    return History((evidence, optouts))


class LedgerQueries(PrivacyQueries):
    """The ledger's reads, the same on every backend (and privacy's writes)."""

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict]:
        raise NotImplementedError

    def _tuples(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def write_batch(self, tokens: Sequence[TokenRecord] = (),
                    decisions: Sequence[tuple[Decision, DecisionRecord]] = ()) -> list[int]:
        raise NotImplementedError

    def _write(self, sql: str, params: Iterable[Any]) -> int:
        raise NotImplementedError

    def exclusive(self):
        raise NotImplementedError

    def record_opt_out(self, org: str, channel: str, address: str, **fields) -> int | None:
        raise NotImplementedError

    def opt_out_unless(self, still_in_force: Callable[[dict], bool] | None, org: str,
                       channel: str, address: str, **fields) -> tuple[int | None, dict | None]:
        """`record_opt_out`, except when `fields["token"]` already led to an opt-out that
        `still_in_force(it)` says holds: checked and written under the ledger's write lock
        (across processes and gateways). (new id or None, the opt-out found or None)."""
        with self.exclusive():
            token = fields.get("token")
            if token and still_in_force is not None:
                existing = self.opt_out_for_token(token)
                if existing is not None and still_in_force(existing):
                    return None, existing
            return self.record_opt_out(org, channel, address, **fields), None

    # -- gateways sharing the ledger --------------------------------------------------------

    def announce(self, entry: dict) -> None:
        """Insert or refresh this gateway's row (its heartbeat): `entry` holds every
        column of `gateways`."""
        self._write(GATEWAY_UPSERT, [entry[n] for n in GATEWAY_COLUMNS])

    def gateways(self) -> list[dict]:
        """Every gateway that ever announced itself here, by id."""
        return self._rows("SELECT * FROM gateways ORDER BY id")

    def evidence_for(self, address: str, channel: str | None = None,
                     org: str | None = None) -> tuple[Evidence, ...]:
        sql, params = EVIDENCE_SELECT + " WHERE address = ?", [address]
        if channel:
            sql, params = sql + " AND channel = ?", params + [channel]
        if org:
            sql, params = sql + " AND org = ?", params + [org]
        return tuple(_evidence_of(r) for r in self._tuples(sql + " ORDER BY id", params))

    def opt_outs_for(self, address: str, org: str | None = None) -> tuple[OptOut, ...]:
        sql, params = "SELECT id, org, channel, address, at, kind, source, method, categories " \
            "FROM optouts WHERE address = ?", [address]
        if org:
            sql, params = sql + " AND org IN (?, ?)", params + [org, ALL_ORGS]
        return tuple(OptOut(str(r[0]), r[1], r[2], r[3], _time(r[4]), r[5], r[6], r[7],
                            _names(r[8])) for r in self._tuples(sql + " ORDER BY id", params))

    def opt_out_count(self, org: str, address: str) -> int:
        """How many opt-out rows (opt-outs and opt-ins) `history` reads for this person and
        org: the same rows, counted on the index alone."""
        return self._tuples("SELECT COUNT(*) FROM optouts WHERE address = ? AND org IN (?, ?)",
                            [address, org, ALL_ORGS])[0][0]

    def opt_out_state(self, org: str, address: str, suppressed_as: str) -> tuple[int, int]:
        """`opt_out_count`, and how many erasures of this person (keyed hash; for any
        org: the caller decides again in full if there is one) there are: one statement,
        two index counts."""
        row = self._tuples(
            "SELECT (SELECT COUNT(*) FROM optouts WHERE address = ? AND org IN (?, ?)), "
            "(SELECT COUNT(*) FROM suppressions WHERE hash = ?)",
            [address, org, ALL_ORGS, suppressed_as])[0]
        return row[0], row[1]

    def opt_out_rows(self, address: str, org: str | None = None) -> list[dict]:
        sql, params = "SELECT * FROM optouts WHERE address = ?", [address]
        if org:
            sql, params = sql + " AND org IN (?, ?)", params + [org, ALL_ORGS]
        return self._rows(sql + " ORDER BY id", params)

    def opt_out_for_token(self, token: str) -> dict | None:
        # A category-scoped opt-out (preference centre) is not the token's unsubscribe.
        rows = self._rows("SELECT * FROM optouts WHERE token = ? AND kind = 'optout' "
                          "AND categories = '[]' ORDER BY id LIMIT 1", [token])
        return rows[0] if rows else None

    def opt_out_for_message(self, message_id: str, method: str,
                            kind: str = "optout") -> dict | None:
        """The opt-out (or, with kind="optin", opt-in) that message `message_id` already
        recorded by `method`: a provider's retried or replayed webhook must not count
        twice."""
        rows = self._rows("SELECT * FROM optouts WHERE message_id = ? AND method = ? "
                          "AND kind = ? ORDER BY id LIMIT 1", [message_id, method, kind])
        return rows[0] if rows else None

    def record_decision(self, decision: Decision, what: DecisionRecord) -> int:
        """Append one decision to the audit log; returns its id."""
        return self.write_batch(decisions=[(decision, what)])[0]

    def decisions_for(self, address: str, org: str | None = None,
                      limit: int | None = None) -> list[dict]:
        sql, params = "SELECT * FROM decisions WHERE address = ?", [address]
        if org:
            sql, params = sql + " AND org = ?", params + [org]
        sql += " ORDER BY id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self._rows(sql, params)

    def recent_decisions(self, limit: int = 50, reason: str | None = None,
                         address: str | None = None) -> list[dict]:
        sql, params = "SELECT * FROM decisions WHERE 1=1", []
        if reason:
            sql, params = sql + " AND reason = ?", params + [reason]
        if address:
            sql, params = sql + " AND address = ?", params + [address]
        # Newest first by `at`, so a reason filter walks the (reason, at) index backwards
        # instead of sorting every decision with that reason.
        return self._rows(sql + f" ORDER BY at DESC, id DESC LIMIT {int(limit)}", params)

    def decision_counts(self, since: str) -> list[dict]:
        return self._rows(
            "SELECT channel, outcome, reason, COUNT(*) AS n FROM decisions WHERE at >= ? "
            "GROUP BY channel, outcome, reason ORDER BY n DESC", [since])

    def decision_counts_by_hour(self, since: str) -> list[dict]:
        """Decisions per UTC hour ("YYYY-MM-DDTHH") and outcome since `since` (index on at)."""
        return self._rows(
            "SELECT substr(at, 1, 13) AS hour, outcome, COUNT(*) AS n FROM decisions "
            "WHERE at >= ? GROUP BY hour, outcome ORDER BY hour", [since])

    def opt_out_counts(self, since: str | None = None) -> list[dict]:
        sql, params = "SELECT channel, method, kind, COUNT(*) AS n FROM optouts", []
        if since:
            sql, params = sql + " WHERE at >= ?", [since]
        return self._rows(sql + " GROUP BY channel, method, kind ORDER BY n DESC", params)

    def record_tokens(self, tokens: Iterable[TokenRecord]) -> None:
        self.write_batch(tokens=list(tokens))

    def token(self, token_id: str) -> TokenRecord | None:
        rows = self._rows("SELECT * FROM tokens WHERE id = ?", [token_id])
        if not rows:
            return None
        r = rows[0]
        return TokenRecord(r["id"], r["org"], r["channel"], r["address"], r["stream"],
                           r["message_id"], r["reply_to"])

    def trail(self, address: str, org: str | None = None) -> dict:
        """A person's whole evidence trail: what a compliance officer hands a regulator."""
        ev_sql, params = "SELECT * FROM evidence WHERE address = ?", [address]
        if org:
            ev_sql, params = ev_sql + " AND org = ?", params + [org]
        evidence = []
        for r in self._rows(ev_sql + " ORDER BY id", params):
            r = dict(r)
            r["categories"] = json.loads(r["categories"])
            r["named_orgs"] = json.loads(r["named_orgs"])
            if r["opt_out_offered"] is not None:
                r["opt_out_offered"] = bool(r["opt_out_offered"])
            r["written"] = bool(r["written"])
            evidence.append(r)
        decisions = self.decisions_for(address, org)
        for d in decisions:
            d["allowed"] = bool(d["allowed"])
        opt_outs = self.opt_out_rows(address, org)
        for o in opt_outs:  # the scope: [] is the whole channel
            o["categories"] = json.loads(o.get("categories") or "[]")
        return {
            "address": address,
            "org": org,
            "evidence": evidence,
            "opt_outs": opt_outs,
            "decisions": decisions,
            "subscriptions": self.subscriptions_for(address, org),
        }


    # -- opt-outs that arrive from elsewhere (gateway/optout_events.py) -------------------

    def optout_event_seen(self, provider: str, event_id: str) -> bool:
        """An event with this provider's id was kept already (a retry or a replay)."""
        return bool(self._tuples("SELECT 1 FROM optout_events WHERE provider = ? AND "
                                 "event_id = ?", [provider, event_id]))

    def record_optout_event(self, event: dict) -> bool:
        """Keep one event (`event` holds every column of OPTOUT_EVENT_COLUMNS); False when
        one with its provider and event id is kept already (on any gateway: the unique
        key decides, under the write lock)."""
        with self.exclusive():
            if self.optout_event_seen(event["provider"], event["event_id"]):
                return False
            self._write(OPTOUT_EVENT_INSERT, [event[n] for n in OPTOUT_EVENT_COLUMNS])
            return True

    def opt_out_id_for_request(self, request_id: str) -> int | None:
        """The id of the opt-out recorded with this request id, if any."""
        rows = self._tuples("SELECT id FROM optouts WHERE request_id = ?", [request_id])
        return int(rows[0][0]) if rows else None

    def note_nonce(self, provider: str, nonce: str, seen_at: str, forget_before: str) -> bool:
        """Remember a webhook's one-time value; False when it was seen already (a replay),
        on any gateway sharing the ledger. Values seen before `forget_before` (too old to
        come with a fresh request) are forgotten on the way."""
        with self.exclusive():
            self._write("DELETE FROM webhook_nonces WHERE seen_at < ?", [forget_before])
            if self._tuples("SELECT 1 FROM webhook_nonces WHERE provider = ? AND nonce = ?",
                            [provider, nonce]):
                return False
            self._write("INSERT INTO webhook_nonces (provider, nonce, seen_at) VALUES (?,?,?) "
                        "ON CONFLICT (provider, nonce) DO NOTHING", [provider, nonce, seen_at])
            return True

    def forget_nonce(self, provider: str, nonce: str) -> None:
        """Forget a nonce whose request could not be recorded (the provider's retry may
        carry it again)."""
        self._write("DELETE FROM webhook_nonces WHERE provider = ? AND nonce = ?",
                    [provider, nonce])

    def complaints_by_stream(self, since: str) -> list[dict]:
        """Complaint events kept since `since` per stream (None: stream not known)."""
        return self._rows(
            "SELECT stream, COUNT(*) AS n FROM optout_events WHERE received_at >= ? "
            "AND method = 'complaint' AND outcome = 'recorded' GROUP BY stream", [since])

    def delivered_by_stream(self, since: str) -> list[dict]:
        """Email copies let through since `since` (allowed, or would-block in monitor
        mode), per stream: the denominator of the complaint rate."""
        return self._rows(
            "SELECT stream, COUNT(*) AS n FROM decisions WHERE at >= ? AND channel = 'email' "
            "AND outcome IN ('allowed', 'would_block') GROUP BY stream", [since])

    def optout_event_counts(self, since: str) -> list[dict]:
        return self._rows(
            "SELECT provider, method, outcome, COUNT(*) AS n FROM optout_events "
            "WHERE received_at >= ? GROUP BY provider, method, outcome", [since])

    def unresolved_optout_events(self, limit: int = 20) -> list[dict]:
        """The newest events kept for the operator: nobody could be told from them."""
        return self._rows("SELECT * FROM optout_events WHERE outcome = 'unresolved' "
                          "ORDER BY id DESC LIMIT ?", [int(limit)])


    # -- double opt-in (gateway/subscriptions.py) -----------------------------------------

    def subscriptions_for(self, address: str, org: str | None = None) -> list[dict]:
        """A person's sign-up requests and their confirmations, oldest first."""
        sql, params = "SELECT * FROM subscriptions WHERE address = ?", [address]
        if org:
            sql, params = sql + " AND org = ?", params + [org]
        rows = self._rows(sql + " ORDER BY requested_at, id", params)
        for r in rows:
            r["categories"] = json.loads(r["categories"])
        return rows

    def subscription(self, subscription_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM subscriptions WHERE id = ?", [subscription_id])
        if not rows:
            return None
        rows[0]["categories"] = json.loads(rows[0]["categories"])
        return rows[0]

    def confirmations_sent(self, address: str, since: str) -> list[dict]:
        """Confirmation messages sent to `address` since `since` (any org), newest first."""
        return self._rows("SELECT id, org, channel, sent_at FROM subscriptions "
                          "WHERE address = ? AND sent_at >= ? ORDER BY sent_at DESC",
                          [address, since])

    def note_confirmation(self, subscription_id: str, *, sent_at: str | None,
                          message_id: str | None) -> None:
        """Whether (and as which message) a sign-up's confirmation went out."""
        self._write("UPDATE subscriptions SET sent_at = ?, message_id = ? WHERE id = ?",
                    [sent_at, message_id, subscription_id])

    def add_subscription(self, row: dict) -> None:
        """Append a pending sign-up (`row`: its columns by name)."""
        names = list(row)
        self._write(f"INSERT INTO subscriptions ({', '.join(names)}) "  # noqa: S608
                    f"VALUES ({', '.join('?' * len(names))})", [row[n] for n in names])

    def confirm_subscription(self, subscription_id: str, evidence: Evidence, *,
                             confirmed_ip: str | None, confirmed_user_agent: str | None,
                             confirmed_via: str) -> int | None:
        """Under the write lock: append the consent `evidence` and mark the sign-up as
        confirmed by it; None (nothing written) when it was confirmed already."""
        with self.exclusive():
            found = self._tuples("SELECT confirmed_at FROM subscriptions WHERE id = ?",
                                 [subscription_id])
            if not found or found[0][0] is not None:
                return None
            evidence_id = self.record_evidence(evidence, "double-opt-in")
            self._write("UPDATE subscriptions SET confirmed_at = ?, confirmed_ip = ?, "
                        "confirmed_user_agent = ?, confirmed_via = ?, evidence_id = ? "
                        "WHERE id = ?", [evidence.confirmed_at.isoformat(), confirmed_ip,
                                         confirmed_user_agent, confirmed_via,
                                         str(evidence_id), subscription_id])
            return evidence_id


OPTOUT_EVENT_COLUMNS = ("provider", "event_id", "event_type", "event_at", "received_at",
                        "method", "outcome", "org", "stream", "address", "optout_id",
                        "problem", "payload")
OPTOUT_EVENT_INSERT = (
    f"INSERT INTO optout_events ({', '.join(OPTOUT_EVENT_COLUMNS)}) "  # noqa: S608 - our names
    f"VALUES ({', '.join('?' * len(OPTOUT_EVENT_COLUMNS))}) "
    "ON CONFLICT (provider, event_id) DO NOTHING")
