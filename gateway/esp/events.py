"""Each ESP's webhook payload read into `OutsideEvent`s: pure functions, no I/O.

| provider | event (as named by it)                     | method      |
|----------|--------------------------------------------|-------------|
| SendGrid | `unsubscribe`, `group_unsubscribe`         | `esp`       |
| SendGrid | `spamreport`                               | `complaint` |
| Mailgun  | `unsubscribed`                             | `esp`       |
| Mailgun  | `complained`                               | `complaint` |
| Postmark | `SubscriptionChange`, `SuppressSending: true` | `esp`    |
| Postmark | `SpamComplaint`                            | `complaint` |

Every other event (deliveries, opens, bounces, a Postmark reactivation) is ignored: None.
The token comes back in each ESP's custom data under `gateway_token` (SendGrid: a
top-level field from `X-SMTPAPI` `unique_args`; Mailgun: `user-variables`; Postmark:
`Metadata`). An event without an id of its own gets one made from its content, so a
repeat is still recognised."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from ..optout_events import COMPLAINT, ESP, OutsideEvent, payload_text

TOKEN_KEY = "gateway_token"
SENDGRID_METHODS = {"unsubscribe": ESP, "group_unsubscribe": ESP, "spamreport": COMPLAINT}
MAILGUN_METHODS = {"unsubscribed": ESP, "complained": COMPLAINT}


class BadPayload(ValueError):
    """A webhook body that is JSON but not of the provider's shape (answered 400)."""


def _text(value) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _epoch(value) -> str | None:
    """Epoch seconds (int, float or their text) as ISO 8601 UTC; None if not one."""
    try:
        seconds = float(value)
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _iso(value) -> str | None:
    """An ISO 8601 time as given by the provider, in UTC; None if not one."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return when.isoformat(timespec="microseconds")


def _made_id(*parts) -> str:
    """An event id made from what identifies an event that has none."""
    return "sha256:" + hashlib.sha256(payload_text(parts).encode()).hexdigest()[:40]


def sendgrid_events(body) -> list[OutsideEvent]:
    """The opt-outs and complaints in a SendGrid Event Webhook batch (a JSON array)."""
    if not isinstance(body, list) or not all(isinstance(e, dict) for e in body):
        raise BadPayload("expected a JSON array of event objects, as SendGrid posts")
    found = []
    for item in body:
        kind = item.get("event")
        if not isinstance(kind, str) or kind not in SENDGRID_METHODS:
            continue
        event_id = _text(item.get("sg_event_id")) or _made_id(
            "sendgrid", kind, item.get("email"), item.get("timestamp"),
            item.get("sg_message_id"))
        found.append(OutsideEvent(
            "sendgrid", event_id[:200], kind, SENDGRID_METHODS[kind], _text(item.get("email")),
            _text(item.get(TOKEN_KEY)), _epoch(item.get("timestamp")), payload_text(item)))
    return found


def mailgun_event(body: dict) -> OutsideEvent | None:
    """The opt-out or complaint in a Mailgun webhook (`event-data`), else None."""
    data = body.get("event-data")
    if not isinstance(data, dict):
        raise BadPayload('expected "event-data", an object, as Mailgun posts')
    kind = data.get("event")
    if not isinstance(kind, str) or kind not in MAILGUN_METHODS:
        return None
    variables = data.get("user-variables")
    token = _text(variables.get(TOKEN_KEY)) if isinstance(variables, dict) else None
    event_id = _text(data.get("id")) or _made_id(
        "mailgun", kind, data.get("recipient"), data.get("timestamp"))
    return OutsideEvent("mailgun", event_id[:200], kind, MAILGUN_METHODS[kind],
                        _text(data.get("recipient")), token, _epoch(data.get("timestamp")),
                        payload_text(data))


def postmark_event(body: dict) -> OutsideEvent | None:
    """The opt-out or complaint in a Postmark webhook, else None."""
    kind = body.get("RecordType")
    metadata = body.get("Metadata")
    token = _text(metadata.get(TOKEN_KEY)) if isinstance(metadata, dict) else None
    if kind == "SubscriptionChange":
        if body.get("SuppressSending") is not True:  # a reactivation: not consent, nothing
            return None
        event_id = _made_id("postmark", kind, body.get("MessageID"), body.get("Recipient"),
                            body.get("ChangedAt"))
        return OutsideEvent("postmark", event_id, kind, ESP, _text(body.get("Recipient")),
                            token, _iso(body.get("ChangedAt")), payload_text(body))
    if kind == "SpamComplaint":
        given = body.get("ID")
        event_id = f"SpamComplaint:{given}" if isinstance(given, int | str) and \
            str(given).strip() else _made_id("postmark", kind, body.get("MessageID"),
                                              body.get("Email"), body.get("BouncedAt"))
        return OutsideEvent("postmark", event_id[:200], kind, COMPLAINT,
                            _text(body.get("Email")), token, _iso(body.get("BouncedAt")),
                            payload_text(body))
    return None
