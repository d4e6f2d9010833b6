"""Opt-outs that arrive from elsewhere: an ESP's webhook event (SendGrid, Mailgun, Postmark)
or a mailbox provider's ARF complaint report. Each event is kept in the ledger as the
source of the opt-out it records (provider, the provider's event id, its time, its raw
type), and recorded through the one opt-out service, `gateway.optouts`.

Who and which org an event is about, in this order:
1. the gateway token it carries (the custom data each ESP hands back, or the reported
   message's List-Unsubscribe / Reply-To): the token's person and org, and the stream the
   copy went through. A token the ledger does not know, or one issued for another address
   than the event's recipient, is not used;
2. else the event's recipient address and `[esp.NAME] org`, the org whose mail that ESP
   sends (ESP events only; an ARF report needs its token).
When neither tells the org, nothing is recorded (fail closed: no opt-out is guessed for an
org, nor spread to all of them); the event is kept with outcome `unresolved` and a
`problem`, logged, and listed on /status for the operator.

Repeats: an event id already kept records nothing (`duplicate`); the opt-out's request id
(`provider:event id`) is unique as well, so two gateways racing on one event record one
opt-out. Ledger away: StoreUnavailable goes up (the webhook answers 503, SMTP 451) and the
provider retries; nothing is kept half-written that a retry would not complete.

An event about a person erased since it happened records nothing (`erased`): see
`_erased_since`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from .addresses import mask, normalise_email
from .errors import InvalidAddress, TokenError
from .ledger import TokenRecord, now_iso
from .logs import event as log_event
from .optouts import OptOutRequest

log = logging.getLogger("gateway.optout_events")

ESP = "esp"  # opt-out method: the person unsubscribed in the ESP's own link or page
COMPLAINT = "complaint"  # opt-out method: the person reported the mail as spam
PAYLOAD_LIMIT = 8192  # characters of an event kept with it
EVENTS_PER_TRANSACTION = 100  # of a webhook batch: commits amortised, the lock held briefly
PROVIDER_NAMES = {"sendgrid": "SendGrid", "mailgun": "Mailgun", "postmark": "Postmark",
                  "arf": "ARF report"}


@dataclass(frozen=True)
class OutsideEvent:
    """One event that may opt a person out, as a provider reported it."""

    provider: str  # sendgrid | mailgun | postmark | arf
    event_id: str  # the provider's id of the event (unique per provider)
    event_type: str  # as the provider named it: spamreport, complained, abuse, ...
    method: str  # ESP or COMPLAINT
    email: str | None  # the recipient the provider names (None: not given, redacted)
    token: str | None  # the gateway token it carries
    occurred_at: str | None  # when the provider says it happened (ISO 8601)
    payload: str  # the event as received (JSON), for the audit trail
    problem: str = ""  # set when the event is already known to name nobody


@dataclass(frozen=True)
class Outcome:
    """What became of one event."""

    outcome: str  # recorded | duplicate | unresolved | erased (nothing recorded)
    org: str | None = None
    optout_id: int | None = None
    problem: str = ""
    address: str = ""  # for the log line (masked there)


def _who(rt, event: OutsideEvent, fallback_org: str | None
         ) -> tuple[TokenRecord | None, str | None, str | None, str]:
    """(token record or None, org, address, problem): the person and org of `event`;
    org None (and `problem` saying why) when it cannot be told."""
    if event.problem:
        return None, None, None, event.problem
    address = None
    if event.email:
        try:
            address = normalise_email(event.email)
        except InvalidAddress:
            address = None
    problem = "no gateway token"
    if event.token:
        try:
            record = rt.tokens.resolve(event.token)
        except TokenError:
            record, problem = None, "its gateway token is unknown or forged"
        if record is not None:
            if record.channel != "email":
                problem = "its gateway token is not an email token"
            elif address is not None and address != record.address:
                problem = "its gateway token belongs to another recipient"
            else:
                return record, record.org, record.address, ""
    if fallback_org and address:
        return None, fallback_org, address, ""
    if event.provider != "arf":
        problem += (f", and no [esp.{event.provider}] org to match its recipient to"
                    if not fallback_org else ", and no usable recipient address")
    return None, None, None, problem


def _record(rt, event: OutsideEvent, fallback_org: str | None) -> Outcome:
    """The writes for one event (inside the caller's ledger transaction)."""
    if rt.ledger.optout_event_seen(event.provider, event.event_id):
        return Outcome("duplicate")
    token, org, address, problem = _who(rt, event, fallback_org)
    if token is None and _erased_since(rt, event, org, address, stale_token=bool(event.token)):
        return Outcome("erased", org)
    optout_id = None
    if org is not None and address is not None:
        name = PROVIDER_NAMES.get(event.provider, event.provider)
        request_id = f"{event.provider}:{event.event_id}"
        recorded = rt.optouts.record(OptOutRequest(
            org, "email", address, method=event.method,
            source=f"{name} {event.event_type} event {event.event_id}"[:500],
            message_id=token.message_id if token else None, client=event.provider,
            token=token.id if token else None, request_id=request_id),
            keep_if_unavailable=False)
        optout_id = recorded.id if recorded.new else rt.ledger.opt_out_id_for_request(request_id)
    outcome = "recorded" if org is not None else "unresolved"
    kept = rt.ledger.record_optout_event({
        "provider": event.provider, "event_id": event.event_id,
        "event_type": event.event_type[:100], "event_at": event.occurred_at,
        "received_at": now_iso(), "method": event.method, "outcome": outcome, "org": org,
        "stream": token.stream if token else None,
        "address": address or (event.email or "")[:320] or None, "optout_id": optout_id,
        "problem": problem, "payload": event.payload[:PAYLOAD_LIMIT]})
    if not kept:
        return Outcome("duplicate", org, optout_id)
    return Outcome(outcome, org, optout_id, problem, address or event.email or "")


def _erased_since(rt, event: OutsideEvent, org: str | None, address: str | None, *,
                  stale_token: bool = False) -> bool:
    """The person the event names was erased (for its org, or any org when that is not
    known) at or after the time the provider gives for it (a retried SendGrid batch), or
    at all when the gateway token it carries is gone (the erasure took it: the copy it
    is about went out before): the erasure covers it, as it would have had the event come
    in time. Recording it would put their address back in the ledger, and their
    suppression entry blocks them already (`erased`): nothing is recorded. What they do
    after the erasure (they signed up again, then complained about a new copy) is
    recorded as usual. Not asked for an event whose token resolves: an erasure takes the
    person's tokens, so theirs was issued after any erasure (one lookup less per event)."""
    candidate = address
    if candidate is None and event.email:
        try:
            candidate = normalise_email(event.email)
        except InvalidAddress:
            return False
    if not candidate:
        return False
    erasures = rt.ledger.erasures_for(rt.consent.suppression.of("email", candidate), org)
    if not erasures:
        return False
    if stale_token:
        return True
    happened = _time(event.occurred_at or now_iso())
    return any(_time(e["at"]) >= happened for e in erasures)


def _time(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _log(event: OutsideEvent, outcome: Outcome) -> None:
    if outcome.outcome == "duplicate":
        return
    if outcome.outcome == "erased":
        log_event(log, "outside_opt_out_erased", provider=event.provider,
                  type=event.event_type[:40], event_id=event.event_id[:80],
                  org=outcome.org or "", problem="person erased since")
        return
    resolved = outcome.outcome == "recorded"
    log_event(log, "outside_opt_out" if resolved else "outside_opt_out_unresolved",
              logging.INFO if resolved else logging.WARNING, provider=event.provider,
              type=event.event_type[:40], event_id=event.event_id[:80], method=event.method,
              org=outcome.org or "", address=mask(outcome.address) if outcome.address else "",
              problem=outcome.problem)


def record_event(rt, event: OutsideEvent, fallback_org: str | None = None) -> Outcome:
    """Record what `event` says, in one ledger transaction (blocking: call it in a
    thread). See the module docstring."""
    with rt.ledger.exclusive():
        outcome = _record(rt, event, fallback_org)
    _log(event, outcome)
    return outcome


def record_events(rt, events: list[OutsideEvent], fallback_org: str | None) -> dict[str, int]:
    """Record a webhook batch in order, EVENTS_PER_TRANSACTION events to a ledger
    transaction (a commit per event made 1,000 cost seconds on PostgreSQL); how many ended
    each way. A repeat inside the batch is counted a duplicate before any write (reads
    inside a transaction may not see its own writes)."""
    counts = {"recorded": 0, "duplicate": 0, "unresolved": 0, "erased": 0}
    unique: dict[tuple[str, str], OutsideEvent] = {}
    for one in events:
        if (one.provider, one.event_id) in unique:
            counts["duplicate"] += 1
        else:
            unique[(one.provider, one.event_id)] = one
    pending = list(unique.values())
    for start in range(0, len(pending), EVENTS_PER_TRANSACTION):
        part = pending[start:start + EVENTS_PER_TRANSACTION]
        with rt.ledger.exclusive():
            outcomes = [_record(rt, one, fallback_org) for one in part]
        for one, outcome in zip(part, outcomes):
            counts[outcome.outcome] += 1
            _log(one, outcome)
    return counts


def payload_text(value) -> str:
    """An event as kept: compact JSON, non-ASCII kept readable."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
