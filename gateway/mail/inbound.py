"""Reading mail that comes back to the mailto domain: does a reply ask to opt out?"""

from __future__ import annotations

import email.policy
import functools
import html
import re
from email.message import EmailMessage
from email.parser import BytesParser

from ..templating import template_dirs

_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response)|auto:|"
    r"abwesenheit|absence|réponse automatique|undeliver|delivery status|"
    r"mail delivery (failed|failure)|returned mail)", re.IGNORECASE)
_ATTRIBUTION = re.compile(r"^(on .+ wrote:|le .+ a écrit|am .+ schrieb|-+\s*original message"
                          r"\s*-+|from:\s)", re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def opt_out_phrases() -> tuple[re.Pattern, ...]:
    """The phrase list from templates/opt_out_phrases.txt, as whole-word patterns."""
    for directory in template_dirs():
        path = directory / "opt_out_phrases.txt"
        if path.is_file():
            lines = path.read_text("utf-8").splitlines()
            phrases = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
            return tuple(re.compile(rf"(?<!\w){re.escape(p)}(?!\w)", re.IGNORECASE)
                         for p in phrases)
    return (re.compile(r"(?<!\w)unsubscribe(?!\w)", re.IGNORECASE),)


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=email.policy.default).parsebytes(raw)  # type: ignore[return-value]


def is_auto_reply(msg: EmailMessage, mail_from: str) -> bool:
    """Auto-replies and bounces never count as opt-outs (RFC 3834 and common practice)."""
    if not mail_from:  # null sender: a bounce
        return True
    auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
    if auto and auto != "no":
        return True
    if any(msg.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress")):
        return True
    if str(msg.get("Precedence", "")).strip().lower() in ("auto_reply", "bulk", "junk"):
        return True
    if msg.get_content_type() == "multipart/report":
        return True
    return bool(_AUTO_SUBJECT.match(str(msg.get("Subject", ""))))


def _text_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        text = part.get_content()
    except (LookupError, ValueError):
        return ""
    if part.get_content_type() == "text/html":
        text = re.sub(r"(?is)<(script|style).*?</\1>", " ", text)
        text = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", text)
        text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return text


def first_new_line(msg: EmailMessage) -> str:
    """The first non-empty line the person wrote (not quoted, not an attribution)."""
    for line in _text_of(msg).splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(">") or _ATTRIBUTION.match(stripped):
            return ""
        return stripped
    return ""


def asks_to_opt_out(msg: EmailMessage) -> str | None:
    """Where the opt-out request was found ("subject" or "first line"), else None."""
    subject = str(msg.get("Subject", ""))
    subject = re.sub(r"^\s*((re|aw|fwd?|sv|antw)\s*:\s*)+", "", subject, flags=re.IGNORECASE)
    patterns = opt_out_phrases()
    if any(p.search(subject) for p in patterns):
        return "subject"
    line = first_new_line(msg)
    if line and any(p.search(line) for p in patterns):
        return "first line"
    return None
