"""Delivery status notifications (RFC 3464 multipart/report) to the envelope sender."""

from __future__ import annotations

import email.policy
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.utils import formatdate, make_msgid

from ..ledger.spool import Copy
from ..templating import render

POLICY = email.policy.SMTP


@dataclass(frozen=True)
class Failure:
    """One recipient the message did not reach, and why."""

    rcpt: str
    status: str  # RFC 3463 code, e.g. "5.7.1"
    diagnostic: str  # e.g. "smtp; 550 5.7.1 blocked: opted_out"
    reason: str = ""  # our reason code, when a consent decision blocked it


def original_headers(data: bytes) -> bytes:
    """The header block of the original message (what text/rfc822-headers carries)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    return data[: end if end >= 0 else len(data)] + b"\r\n"


def build_dsn(*, hostname: str, to: str, original: bytes, failures: list[Failure],
              action: str = "failed", template: str = "dsn.txt.j2") -> bytes:
    """A multipart/report; report-type=delivery-status for `failures`, from the
    postmaster of `hostname`, with the original headers attached."""
    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(original)
    msg = EmailMessage(policy=POLICY)
    msg["From"] = f"Mail Delivery System <postmaster@{hostname}>"
    msg["To"] = to
    msg["Subject"] = ("Undelivered Mail Returned to Sender" if action == "failed"
                      else "Delivery Status Notification")
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=hostname)
    msg["Auto-Submitted"] = "auto-replied"
    if headers.get("Message-ID"):
        msg["In-Reply-To"] = str(headers["Message-ID"])
    msg.set_content(render(template, failures=failures, subject=str(headers.get("Subject", "")),
                           hostname=hostname, action=action))
    status = EmailMessage(policy=POLICY)
    status["Content-Type"] = "message/delivery-status"
    blocks = [_fields(("Reporting-MTA", f"dns; {hostname}"))]
    blocks += [_fields(("Final-Recipient", f"rfc822; {f.rcpt}"), ("Action", action),
                       ("Status", f.status), ("Diagnostic-Code", _one_line(f.diagnostic)))
               for f in failures]
    status.set_payload(blocks)
    msg.make_mixed()
    msg.attach(status)
    rfc822 = EmailMessage(policy=POLICY)
    head = original_headers(original)
    rfc822.set_content(head, maintype="text", subtype="rfc822-headers", cte=_cte(head))
    msg.attach(rfc822)
    msg.set_type("multipart/report")
    msg.set_param("report-type", "delivery-status")
    return msg.as_bytes(policy=POLICY)


def _cte(head: bytes) -> str:
    """7bit or 8bit as the headers are; quoted-printable when a line is longer than SMTP
    allows (else the bounce of a message refused for that line is refused for it too)."""
    if any(len(line.rstrip(b"\r")) > 998 for line in head.split(b"\n")):
        return "quoted-printable"
    return "8bit" if any(b > 127 for b in head) else "7bit"


def _fields(*pairs: tuple[str, str]) -> Message:
    block = Message(policy=POLICY)
    for name, value in pairs:
        block[name] = value
    return block


def _one_line(text: str) -> str:
    return " ".join(text.split())[:900]


def erased_notice(hostname: str, copy: Copy) -> Copy | None:
    """The DSN telling a marketing copy's sender it goes nowhere: its recipient was erased
    while it waited (None for a copy that is no marketing copy or has no sender)."""
    if copy.kind != "copy" or not copy.mail_from:
        return None
    dsn = build_dsn(hostname=hostname, to=copy.mail_from, original=copy.data, failures=[
        Failure(copy.rcpt, "5.7.1", "smtp; 550 5.7.1 blocked before delivery: erased",
                "erased")])
    return Copy("dsn", "", copy.mail_from, dsn, copy.message_id, copy.stream, copy.org)
