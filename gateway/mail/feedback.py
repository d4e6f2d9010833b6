"""ARF feedback reports (RFC 5965): a mailbox provider's "this is spam" about a copy the
gateway sent, mailed to `abuse+reports@mailto_domain` or to an address in
`[feedback] report_addresses` (accepted from anyone, never relayed).

A report is a `multipart/report; report-type=feedback-report`: a human-readable part, a
`message/feedback-report` part (Feedback-Type, User-Agent, Arrival-Date, ...) and the
reported message (`message/rfc822`, or only its header as `text/rfc822-headers`). The
reported message's token, from its `List-Unsubscribe` (`/u/TOKEN` under public_url, or
`unsubscribe+TOKEN@mailto_domain`) or its `Reply-To` (`reply+TOKEN@mailto_domain`), says
who and which org: opt-out method `complaint`. A report without a usable token, of a
feedback type that is no complaint (`not-spam`, `virus`, `auth-failure`, ...), or that is
not ARF at all, records nothing and is kept for the operator (/status).

Read with the standard library's `email` package (`email.policy.default`), in a thread,
from the first READ_LIMIT bytes only (reports are small; a returned message may not be,
and only its header is needed): its header parsers are slow on crafted input, so the
input is bounded and any failure to read is a report kept unread, never an error."""

from __future__ import annotations

import email.policy
import hashlib
import re
from datetime import UTC
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.utils import parsedate_to_datetime

from ..config import Settings
from ..optout_events import COMPLAINT, OutsideEvent, payload_text

REPORT_LOCAL = "abuse+reports"
READ_LIMIT = 256 * 1024
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "opt-out"})
FIELD_LIMIT = 300  # characters of a header value kept with the report
_TOKEN = r"([A-Za-z2-7]{32})(?![A-Za-z0-9])"


def is_report_address(settings: Settings, address: str) -> bool:
    """Mail to `address` is read as an ARF report."""
    local, _, domain = address.rpartition("@")
    if local.lower() == REPORT_LOCAL and domain.lower() == settings.unsubscribe.mailto_domain:
        return True
    return address.lower() in settings.feedback.report_addresses


def _field(headers: Message | None, name: str) -> str:
    if headers is None:
        return ""
    value = headers.get(name)
    return " ".join(str(value).split())[:FIELD_LIMIT] if value is not None else ""


def _parts(report: Message) -> tuple[Message | None, Message | None]:
    """(the feedback-report fields, the reported message's header), None where absent."""
    fields = returned = None
    for part in report.iter_parts():
        kind = part.get_content_type()
        if kind == "message/feedback-report" and fields is None:
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                fields = inner[0]
            elif isinstance(inner, str):
                fields = HeaderParser(policy=email.policy.default).parsestr(inner)
        elif kind == "message/rfc822" and returned is None:
            inner = part.get_payload()
            returned = inner[0] if isinstance(inner, list) and inner else None
        elif kind in ("text/rfc822-headers", "message/rfc822-headers") and returned is None:
            returned = HeaderParser(policy=email.policy.default).parsestr(part.get_content())
    return fields, returned


def find_token(returned: Message | None, public_url: str, mailto_domain: str) -> str | None:
    """The gateway token in the reported message's List-Unsubscribe or Reply-To."""
    if returned is None:
        return None
    domain = re.escape(mailto_domain)
    patterns = [(_field(returned, "List-Unsubscribe"), re.escape(public_url) + "/u/" + _TOKEN),
                (_field(returned, "List-Unsubscribe"), rf"unsubscribe\+{_TOKEN}@{domain}"),
                (_field(returned, "Reply-To"), rf"reply\+{_TOKEN}@{domain}")]
    for text, pattern in patterns:
        m = re.search(pattern, text, re.IGNORECASE)
        if m:
            return m.group(1).lower()
    return None


def _arrival(fields: Message | None) -> str | None:
    text = _field(fields, "Arrival-Date") or _field(fields, "Received-Date")
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return when.astimezone(UTC).isoformat(timespec="microseconds") if when.tzinfo else None


def read_report(raw: bytes, public_url: str, mailto_domain: str) -> OutsideEvent:
    """The complaint in a report mailed to a report address (see the module docstring).
    Its event id is made from its bytes: the same report delivered twice counts once."""
    event_id = "sha256:" + hashlib.sha256(raw).hexdigest()[:40]
    try:
        report = BytesParser(policy=email.policy.default).parsebytes(raw[:READ_LIMIT])
        is_arf = report.get_content_type() == "multipart/report" and str(
            report.get_param("report-type") or "").lower() == "feedback-report"
        fields, returned = _parts(report) if is_arf else (None, None)
        feedback_type = _field(fields, "Feedback-Type").lower()
        token = find_token(returned, public_url, mailto_domain)
        kept = {"reporter": _field(report, "From"), "subject": _field(report, "Subject"),
                "feedback_type": feedback_type, "user_agent": _field(fields, "User-Agent"),
                "original_rcpt_to": _field(fields, "Original-Rcpt-To"),
                "arrival_date": _field(fields, "Arrival-Date"),
                "reported_message_id": _field(returned, "Message-ID"),
                "reported_subject": _field(returned, "Subject"),
                "reported_from": _field(returned, "From")}
        occurred = _arrival(fields)
    # The email package on hostile input: any failure means a report we cannot read.
    except Exception:  # noqa: BLE001 - kept for the operator, never an SMTP error
        return OutsideEvent("arf", event_id, "unreadable", COMPLAINT, None, None, None,
                            payload_text({"size": len(raw)}),
                            problem="the report could not be read")
    problem = ""
    if not is_arf:
        problem = "not an ARF report (multipart/report; report-type=feedback-report)"
    elif feedback_type not in COMPLAINT_TYPES:
        problem = f"feedback type {feedback_type or 'missing'!r} is not a complaint"
    elif token is None:
        problem = ("the reported message carries no gateway token (List-Unsubscribe, "
                   "Reply-To)")
    return OutsideEvent("arf", event_id, feedback_type or ("not-arf" if not is_arf else "none"),
                        COMPLAINT, None, token, occurred, payload_text(kept), problem=problem)
