"""Reading mail that comes back to the mailto domain: does a reply ask to opt out?

Anyone on the internet can send a reply, so it is read as hostile input: only its first
`READ_LIMIT` bytes, by linear scans. Neither the email package (its structured-header
parsers take quadratic time, or recurse without bound, on crafted headers) nor a
backtracking regex over the body is used. `read_reply` still takes milliseconds on a big
reply: call it in a thread, off the event loop."""

from __future__ import annotations

import binascii
import codecs
import functools
import html
import re
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header

from ..templating import template_dirs
from .headers import split_head

# Bytes of a reply that are read: its headers and the start of its first text part, where
# the subject and the first new line are. The rest is relayed unread.
READ_LIMIT = 128 * 1024
HEADER_LIMIT = 4096  # characters of a header value read
MAX_DEPTH = 8  # multiparts nested deeper than this are not looked into
MAX_BOUNDARY = 70  # RFC 2046; a longer one is not followed

_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response)|auto:|"
    r"abwesenheit|absence|réponse automatique|undeliver|delivery status|"
    r"mail delivery (failed|failure)|returned mail)", re.IGNORECASE)
_ATTRIBUTION = re.compile(r"^(on .+ wrote:|le .+ a écrit|am .+ schrieb|-+\s*original message"
                          r"\s*-+|from:\s)", re.IGNORECASE)
_REPLY_PREFIX = re.compile(r"^\s*((re|aw|fwd?|sv|antw)\s*:\s*)+", re.IGNORECASE)
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_TAG_START = re.compile(r"<[A-Za-z/!?]")  # any other "<" is text
_TAG_NAME = re.compile(r"/?([A-Za-z][A-Za-z0-9]*)")
# Elements whose content is never shown as text; each ends at its own closing tag.
_HIDDEN_END = {name: re.compile(rf"</{name}", re.IGNORECASE)
               for name in ("script", "style", "title")}
_LINE_TAGS = frozenset({"br", "p", "div", "li", "tr", "blockquote", "h1", "h2", "h3", "h4",
                        "h5", "h6"})
# Decoders that take more than linear time on crafted input, or want a different error handler.
_SLOW_CODECS = frozenset({"idna", "punycode"})


@dataclass(frozen=True)
class Reply:
    """What the gateway needs of a message to the mailto domain."""

    author: str  # its From, for the log (at most 200 characters)
    message_id: str | None
    opt_out: str | None  # where it asks to opt out: "subject", "first line"; else None


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


def read_reply(raw: bytes, mail_from: str) -> Reply:
    """Read a reply (the whole message as received) for an opt-out request, looking only
    at its first READ_LIMIT bytes, in time linear in them. `mail_from`: the envelope
    sender ("" for a bounce)."""
    message = _Entity.read(raw[:READ_LIMIT])
    found = None
    if not _is_auto_reply(message, mail_from):
        found = asks_to_opt_out(message.header("subject"), _first_new_line(message))
    return Reply(author=message.header("from")[:200],
                 message_id=message.header("message-id") or None, opt_out=found)


@dataclass(frozen=True)
class _Entity:
    """A message or body part: its header fields (the first of each name, unfolded, at
    most HEADER_LIMIT bytes) and its body, still transfer-encoded."""

    fields: dict[str, bytes]
    body: bytes

    @classmethod
    def read(cls, data: bytes) -> _Entity:
        if data[:1] in (b"\r", b"\n"):  # an empty line first: no header fields
            head, rest = b"", data
        else:
            head, rest = split_head(data)
        body = rest[2:] if rest[:2] == b"\r\n" else rest[1:]  # after the empty line
        fields: dict[str, list[bytes]] = {}
        current: list[bytes] = []  # the lines of the field being read; [] for one skipped
        for line in head.splitlines():
            if line[:1] in (b" ", b"\t"):
                current.append(line)
                continue
            name, colon, value = line.partition(b":")
            key = name.rstrip().decode("ascii", "replace").lower()
            if colon and key not in fields:
                current = fields[key] = [value]
            else:
                current = []  # a repeated field, or a line that is not a field
        return cls({key: b" ".join(b" ".join(lines).split())[:HEADER_LIMIT]
                    for key, lines in fields.items()}, body)

    def header(self, name: str) -> str:
        """The field `name` (lower case), encoded words decoded; "" when absent."""
        value = self.fields.get(name)
        if not value:
            return ""
        text = value.decode("utf-8", "replace")
        try:
            return str(make_header(decode_header(text)))
        except (HeaderParseError, LookupError, UnicodeError, ValueError):
            return text

    def content_type(self) -> tuple[str, dict[str, str]]:
        """Type and parameters; text/plain when absent. Parameters are split at ";",
        which neither a boundary (RFC 2046 bchars) nor a charset can hold."""
        kind, *params = self.header("content-type").split(";")
        values: dict[str, str] = {}
        for param in params:
            name, _, value = param.partition("=")
            values.setdefault(name.strip().lower(), value.strip().strip('"'))
        return kind.strip().lower() or "text/plain", values


def _is_auto_reply(message: _Entity, mail_from: str) -> bool:
    """Auto-replies and bounces never count as opt-outs (RFC 3834 and common practice)."""
    if not mail_from:  # null sender: a bounce
        return True
    auto = message.header("auto-submitted").strip().lower()
    if auto and auto != "no":
        return True
    if any(message.header(h) for h in ("x-autoreply", "x-autorespond",
                                        "x-auto-response-suppress")):
        return True
    if message.header("precedence").strip().lower() in ("auto_reply", "bulk", "junk"):
        return True
    if message.content_type()[0] == "multipart/report":
        return True
    return bool(_AUTO_SUBJECT.match(message.header("subject")))


def asks_to_opt_out(subject: str, first_line: str) -> str | None:
    """Where the opt-out request was found ("subject" or "first line"), else None. The
    subject is read after its Re:/Fwd: prefixes."""
    subject = _REPLY_PREFIX.sub("", subject)
    patterns = opt_out_phrases()
    if any(p.search(subject) for p in patterns):
        return "subject"
    if first_line and any(p.search(first_line) for p in patterns):
        return "first line"
    return None


def _first_new_line(message: _Entity) -> str:
    """The first non-empty line the person wrote (not quoted, not an attribution) in the
    message's first text part (text/plain preferred to text/html)."""
    for line in _body_text(message).splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(">") or _ATTRIBUTION.match(stripped):
            return ""
        return stripped
    return ""


def _body_text(message: _Entity) -> str:
    """The text of the first text/plain part meant for display, else of the first
    text/html part (tags, scripts and styles removed); "" when there is neither."""
    found = _first_text_part(message)
    if found is None:
        return ""
    part, is_html, charset = found
    encoding = part.header("content-transfer-encoding").strip().lower()
    text = _decode_charset(_decode_transfer(part.body, encoding), charset)
    return _html_text(text) if is_html else text


def _first_text_part(message: _Entity) -> tuple[_Entity, bool, str] | None:
    """(the part, whether it is HTML, its charset) that `_body_text` reads. Depth first,
    in order; each level scans its bytes once, so at most MAX_DEPTH passes in all."""
    html_part = None
    pending: list[tuple[_Entity, int]] = [(message, 0)]
    while pending:
        part, depth = pending.pop()
        ctype, params = part.content_type()
        if ctype.startswith("multipart/"):
            boundary = params.get("boundary", "")
            if 0 < len(boundary) <= MAX_BOUNDARY and depth < MAX_DEPTH:
                children = _multipart_children(part.body, boundary.encode())
                pending.extend((_Entity.read(child), depth + 1) for child in reversed(children))
            continue
        if part.header("content-disposition").lower().startswith("attachment"):
            continue
        if ctype == "text/plain":
            return part, False, params.get("charset", "")
        if ctype == "text/html" and html_part is None:
            html_part = (part, True, params.get("charset", ""))
    return html_part


def _multipart_children(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts between the delimiter lines of a multipart body; the last one may be cut
    short by the read limit. One forward scan."""
    delimiter = b"--" + boundary
    children: list[bytes] = []
    start = -1  # where the current child begins
    at = body.find(delimiter)
    while at >= 0:
        if at == 0 or body[at - 1:at] == b"\n":  # a delimiter line, not text inside a part
            if start >= 0:
                children.append(body[start:at])
            if body[at + len(delimiter):at + len(delimiter) + 2] == b"--":
                return children  # the close delimiter
            line_end = body.find(b"\n", at)
            if line_end < 0:
                return children
            start = line_end + 1
            at = body.find(delimiter, start)
        else:
            at = body.find(delimiter, at + 1)
    if start >= 0:
        children.append(body[start:])
    return children


def _decode_transfer(body: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        data = _NOT_BASE64.sub(b"", body)
        return binascii.a2b_base64(data[:len(data) - len(data) % 4])  # whole quanta only
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


def _decode_charset(data: bytes, charset: str) -> str:
    """`data` in its charset, undecodable bytes replaced; UTF-8 when the charset is missing,
    unknown or not a plain text codec."""
    try:
        name = codecs.lookup(charset).name if charset else "utf-8"
        if name not in _SLOW_CODECS:
            return data.decode(name, "replace")
    except (LookupError, UnicodeError):
        pass
    return data.decode("utf-8", "replace")


def _html_text(markup: str) -> str:
    """The text a reader sees in `markup`: tags become spaces (line breaks for those that
    break lines), comments, scripts, styles and titles vanish, entities are decoded. One
    forward scan: every search starts where the last one ended."""
    out: list[str] = []
    pos = 0
    while (start := _TAG_START.search(markup, pos)) is not None:
        lt = start.start()
        out.append(markup[pos:lt])
        if markup.startswith("<!--", lt):
            pos = _end_of(markup, "-->", lt + 4)
            continue
        name = _TAG_NAME.match(markup, lt + 1)
        pos = _end_of(markup, ">", lt)  # a tag left open runs to the end
        tag = name.group(1).lower() if name else ""
        hidden = _HIDDEN_END.get(tag) if name and name.group(0)[0] != "/" else None
        if hidden is not None:  # hidden up to its closing tag, or to the end without one
            end = hidden.search(markup, pos)
            pos = len(markup) if end is None else _end_of(markup, ">", end.end())
        out.append("\n" if tag in _LINE_TAGS else " ")
    out.append(markup[pos:])
    return html.unescape("".join(out))


def _end_of(text: str, needle: str, start: int) -> int:
    """The index just after the first `needle` from `start`; the end of `text` without one."""
    at = text.find(needle, start)
    return len(text) if at < 0 else at + len(needle)
