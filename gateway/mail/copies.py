"""The email pipeline for one accepted message: classify, decide per recipient, rewrite
and sign each allowed marketing copy. Pure work plus ledger calls; runs in a thread."""

from __future__ import annotations

import dataclasses
import email.policy
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import make_msgid

from ..addresses import normalise_email
from ..config import Stream
from ..consent import Classification, classify
from ..identification import email_footers
from ..ledger import TokenRecord
from ..ledger.spool import Copy, Marketing
from ..policy import Decision
from ..runtime import Runtime
from ..templating import render
from .dsn import Failure
from .esp_headers import add_esp_headers
from .headers import ensure_message_id, strip_headers
from .rewrite import rewrite_for_recipient

GATEWAY_HEADER_PREFIX = b"X-Gateway-"
UK_AND_EU = frozenset({"", "uk-pecr", "uk-pecr-2026", "eu-eprivacy", "eu-de", "eu-fr"})


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
    end = raw.find(b"\n\r")  # the usual CRLF CRLF; then only look before it for the rest
    limit = len(raw) if end < 0 else end + 1
    ends = [i for i in (raw.find(b"\n\n", 0, limit), raw.find(b"\r\r", 0, limit), end)
            if i >= 0]
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
        decision, optouts_seen = rt.consent.assess(c, "email", address)
        out.decisions.append((address, decision))
        deliver = decision.allowed or rt.settings.gateway.monitor
        if not deliver:
            out.blocked.append(Failure(rcpt, "5.7.1", f"smtp; 550 5.7.1 blocked: "
                                       f"{decision.reason}", decision.reason))
        elif decision.needs_opt_out:
            out.copies.append(_marketing_copy(rt, raw, mail_from, rcpt, address, c, message_id,
                                              out.tokens, optouts_seen, decision))
        else:
            data = strip_headers(raw, GATEWAY_HEADER_PREFIX)
            out.copies.append(Copy("copy", mail_from, rcpt, data, message_id, c.stream, c.org))
    return out


# Footers: rendered once per org and template with a stand-in token, the real token then
# put in by replacing it (a jinja2 render per copy costs more than the rest of the footer
# work). Two stand-ins of the token alphabet check that a template only prints the token.
_STAND_INS = ("x7" * 16, "y6" * 16)
_SKELETONS: dict[tuple[str, ...], str | None] = {}


def _footer_context(rt: Runtime, org_name: str, token: str) -> dict[str, str]:
    return {"org_name": org_name, "unsubscribe_url": rt.unsubscribe_url(token),
            "mailto": rt.unsubscribe_mailto(token)}


def footer(rt: Runtime, name: str, org_name: str, token: str) -> str:
    """The footer template `name` for `token`: the same text as rendering it with the
    token's context. Templates are read once per process (edits need a restart)."""
    first, second = _STAND_INS
    key = (name, org_name, rt.unsubscribe_url(first), rt.unsubscribe_mailto(first))
    if key not in _SKELETONS:
        a = render(name, **_footer_context(rt, org_name, first))
        b = render(name, **_footer_context(rt, org_name, second))
        verbatim = second not in a and first not in b and a.replace(first, second) == b
        if len(_SKELETONS) > 1000:
            _SKELETONS.clear()
        _SKELETONS[key] = a if verbatim else None
    skeleton = _SKELETONS[key]
    if skeleton is None:  # the template does more with the token than print it
        return render(name, **_footer_context(rt, org_name, token))
    return skeleton.replace(first, token)


def _marketing_copy(rt: Runtime, raw: bytes, mail_from: str, rcpt: str, address: str,
                    c: Classification, message_id: str, tokens: list[TokenRecord],
                    optouts_seen: int | None, decision: Decision | None = None) -> Copy:
    token, record = rt.tokens.issue(org=c.org, channel="email", address=address,
                                    stream=c.stream, message_id=message_id)
    url = rt.unsubscribe_url(token)
    reply_to = None
    if rt.settings.unsubscribe.reply_handling == "rewrite":
        reply_to = f"reply+{token}@{rt.settings.unsubscribe.mailto_domain}"
    org = rt.settings.orgs.get(c.org)
    org_name = org.name if org else c.org
    footer_text = footer(rt, "email_footer.txt.j2", org_name, token)
    footer_html = footer(rt, "email_footer.html.j2", org_name, token)
    if decision is not None and decision.ruleset not in UK_AND_EU:
        # The recipient's rule set asks for the sender's address, contact or an
        # advertisement line (gateway/identification.py).
        more_text, more_html = email_footers(org, decision)
        footer_text, footer_html = footer_text + more_text, footer_html + more_html
    result = rewrite_for_recipient(
        raw, unsubscribe_url=url, mailto_url=f"mailto:{rt.unsubscribe_mailto(token)}",
        reply_to=reply_to, footer_text=footer_text, footer_html=footer_html)
    data = result.data
    if rt.settings.esp:  # each configured ESP's custom data names the token (esp_headers.py)
        data = add_esp_headers(data, token, tuple(rt.settings.esp))
    if rt.dkim is not None:
        data = rt.dkim.sign(data)
    tokens.append(dataclasses.replace(record, reply_to=result.original_reply_to))
    return Copy("copy", mail_from, rcpt, data, message_id, c.stream, c.org,
                Marketing(address, c.purpose, c.nature, c.category, rt.consent.incarnation,
                          optouts_seen))
