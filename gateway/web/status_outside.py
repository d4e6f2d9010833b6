"""The /status block for opt-outs that arrive from elsewhere (ESP webhooks, ARF reports):
the complaint rate per stream, the events of the last 24 h, and the events kept for the
operator because nobody could be told from them.

Complaint rate: complaint events recorded in the last 24 h ÷ email copies let through in
the last 24 h (decisions allowed, or would-block in monitor mode), per stream, across every
gateway on the ledger. Mailbox providers throttle or refuse a sender above 0.3 %
(`COMPLAINT_LINE`): a stream at or over it is marked. Complaints whose stream is not known
(an ESP event matched by address, without a token) are counted apart."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from ..addresses import mask
from ..runtime import Runtime

COMPLAINT_LINE = 0.003
WINDOW = timedelta(hours=24)
UNRESOLVED_SHOWN = 20
# What of an event kept for the operator is shown (ARF reports keep these fields).
SHOWN_FIELDS = ("feedback_type", "reporter", "user_agent", "reported_subject",
                "reported_message_id", "arrival_date")


def _counts(rows: list[dict]) -> dict:
    return {r["stream"]: r["n"] for r in rows}


def complaint_rates(rt: Runtime, since: str) -> dict:
    delivered = _counts(rt.ledger.delivered_by_stream(since))
    complaints = _counts(rt.ledger.complaints_by_stream(since))
    streams = [s.id for s in rt.settings.streams]
    streams += sorted(s for s in set(delivered) | set(complaints) if s and s not in streams)
    rows = []
    for stream in streams:
        sent, complained = delivered.get(stream, 0), complaints.get(stream, 0)
        rate = complained / sent if sent else None
        rows.append({"stream": stream, "delivered": sent, "complaints": complained,
                     "rate": rate, "rate_percent": None if rate is None else round(100 * rate, 3),
                     "over_line": (rate is not None and rate >= COMPLAINT_LINE)
                     or (complained > 0 and not sent)})
    return {"line": COMPLAINT_LINE, "line_percent": 100 * COMPLAINT_LINE, "streams": rows,
            "without_stream": complaints.get(None, 0)}


def _shown(row: dict) -> dict:
    """An event kept for the operator as /status shows it: addresses masked."""
    try:
        payload = json.loads(row["payload"] or "{}")
    except ValueError:
        payload = {}
    details = {k: str(payload[k]) for k in SHOWN_FIELDS
               if isinstance(payload, dict) and payload.get(k)}
    if "reporter" in details:
        details["reporter"] = " ".join(mask(w) if "@" in w else w
                                       for w in details["reporter"].split())
    return {"received_at": row["received_at"], "provider": row["provider"],
            "event_type": row["event_type"], "event_id": row["event_id"],
            "address": mask(row["address"]) if row["address"] else "",
            "problem": row["problem"], "details": details}


def outside_opt_outs(rt: Runtime, now: datetime) -> dict:
    """Everything this block shows (runs in the status snapshot's worker thread)."""
    since = (now - WINDOW).isoformat(timespec="microseconds")
    events: dict[str, dict[str, int]] = {}
    for r in rt.ledger.optout_event_counts(since):
        entry = events.setdefault(r["provider"], {})
        entry[r["outcome"]] = entry.get(r["outcome"], 0) + r["n"]
    return {"complaint_rate_24h": complaint_rates(rt, since), "events_24h": events,
            "unresolved": [_shown(r) for r in rt.ledger.unresolved_optout_events(
                UNRESOLVED_SHOWN)]}
