"""The email pipeline for one accepted message: classify, decide per recipient, rewrite
and sign each allowed marketing copy. Pure work plus ledger calls; runs in a thread."""

from __future__ import annotations

import dataclasses
import email.policy
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import make_msgid

from ..config import Stream
from ..consent import Classification, classify
from ..ledger import TokenRecord, normalise_email
from ..ledger.spool import Copy
from ..policy import Decision
from ..runtime import Runtime
from ..templating import render
from .dsn import Failure
from .headers import ensure_message_id, strip_headers
from .rewrite import rewrite_for_recipient

GATEWAY_HEADER_PREFIX = b"X-Gateway-"


@dataclass
class Prepared:
    """What DATA produced: copies to spool, tokens to store, recipients blocked."""

    message_id: str
    classification: Classification
    copies: list[Copy] = field(default_factory=list)
    tokens: list[TokenRecord] = field(default_factory=list)
    blocked: list[Failure] = field(default_factory=list)
    decisions: list[tuple[str, Decision]] = field(default_factory=list)


def _header_block(raw: bytes) -> bytes:
    """A prefix of `raw` sure to hold every header a parser can see: up to the first empty
    line, whatever the line endings (an empty line always makes one of these pairs)."""
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r"), raw.find(b"\r\r")) if i >= 0]
    return raw[:min(ends) + 2] if ends else raw


def classify_message(raw: bytes, stream: Stream | None) -> Classification:
    """Stream defaults, overridden by X-Gateway-* headers where the stream allows it."""
    if stream is None or not stream.allow_headers or \
            GATEWAY_HEADER_PREFIX.lower() not in _header_block(raw).lower():
        return classify(stream)  # no X-Gateway-* header: nothing to parse for
    headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    return classify(stream, headers.get("X-Gateway-Purpose"), headers.get("X-Gateway-Nature"),
                    headers.get("X-Gateway-Category"))


def prepare(rt: Runtime, raw: bytes, mail_from: str, rcpts: list[str],
            stream: Stream | None) -> Prepared:
    """Decide for every recipient and build its copy. Raises UnrewritableMessage (before
    anything is recorded) when a marketing message cannot carry its opt-out safely."""
    raw, message_id = ensure_message_id(raw, lambda: make_msgid(domain=rt.settings.smtp.hostname))
    c = classify_message(raw, stream)
    out = Prepared(message_id, c)
    for rcpt in rcpts:
        address = normalise_email(rcpt)
        decision = rt.consent.evaluate(c, "email", address)
        out.decisions.append((address, decision))
        deliver = decision.allowed or rt.settings.gateway.monitor
        if not deliver:
            out.blocked.append(Failure(rcpt, "5.7.1", f"smtp; 550 5.7.1 blocked: "
                                       f"{decision.reason}", decision.reason))
        elif decision.needs_opt_out:
            out.copies.append(_marketing_copy(rt, raw, mail_from, rcpt, address, c, message_id,
                                              out.tokens))
        else:
            data = strip_headers(raw, GATEWAY_HEADER_PREFIX)
            out.copies.append(Copy("copy", mail_from, rcpt, data, message_id, c.stream, c.org))
    return out


def _marketing_copy(rt: Runtime, raw: bytes, mail_from: str, rcpt: str, address: str,
                    c: Classification, message_id: str, tokens: list[TokenRecord]) -> Copy:
    token, record = rt.tokens.issue(org=c.org, channel="email", address=address,
                                    stream=c.stream, message_id=message_id)
    url = rt.unsubscribe_url(token)
    mailto = rt.unsubscribe_mailto(token)
    reply_to = None
    if rt.settings.unsubscribe.reply_handling == "rewrite":
        reply_to = f"reply+{token}@{rt.settings.unsubscribe.mailto_domain}"
    org = rt.settings.orgs.get(c.org)
    context = {"org_name": org.name if org else c.org, "unsubscribe_url": url,
               "mailto": mailto}
    result = rewrite_for_recipient(
        raw, unsubscribe_url=url, mailto_url=f"mailto:{mailto}",
        reply_to=reply_to, footer_text=render("email_footer.txt.j2", **context),
        footer_html=render("email_footer.html.j2", **context))
    data = result.data
    if rt.dkim is not None:
        data = rt.dkim.sign(data)
    tokens.append(dataclasses.replace(record, reply_to=result.original_reply_to))
    return Copy("copy", mail_from, rcpt, data, message_id, c.stream, c.org)
