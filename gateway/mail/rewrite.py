"""Per-recipient rewriting of a marketing message: opt-out headers, footer or link, Reply-To.

Only the text parts that change are re-encoded. Every other part (attachments, inline
images, forwarded messages, signed content) is written back exactly as it arrived: the
policy below never refolds a header taken from the source, and the generator writes an
untouched part's encoded body verbatim (only line endings become CRLF).

Decisions worth knowing:
- The placeholder (`{{unsubscribe_url}}`, `{{ unsubscribe_url }}` or its URL-encoded form
  `%7B%7Bunsubscribe_url%7D%7D`) in any displayable part means the sender placed the link
  themselves: it is replaced in every displayable part and no footer is added anywhere.
- A message with no displayable text part (say, only a PDF) gets a small text/plain footer
  part: appended to a top-level multipart/mixed, otherwise the original body is wrapped,
  untouched, in a new multipart/mixed.
- Signed or encrypted messages (multipart/signed, multipart/encrypted, pkcs7-mime) get the
  headers only; their body is copied byte for byte.
- `UnrewritableMessage` (never a broken copy) for: a multipart whose boundary is missing or
  never found; a text part with undecodable base64, an unknown or non-ASCII-compatible
  charset (UTF-16), an unknown transfer encoding, or a Content-Type too mangled to change;
  a signed message whose header block holds a stray line (no safe place to cut the body).
- Parts the sender sent out of spec (overlong lines in an attachment, say) stay as they
  were; the parts we re-encode never exceed 998 octets a line.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import html
import quopri
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from email import _encoded_words
from email import errors as email_errors
from email.generator import BytesGenerator
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import make_msgid, parseaddr
from io import BytesIO
from typing import Any

from gateway.errors import GatewayError


class _SourcePolicy(EmailPolicy):
    """EmailPolicy that writes each header taken from the source exactly as it came.

    The stock policy splits a source header with str.splitlines(), which also breaks at
    form feeds and other control characters and so would corrupt the header block.
    """

    def header_fetch_parse(self, name: str, value: Any) -> Any:
        # A rewrite fetches each MIME header ~10 times (get_content_type, get_param, the
        # generator...) and the stock policy parses it again each time: ~75 % of the
        # rewrite's CPU. Parsed headers are immutable, so equal (name, value) share one.
        # Only MIME structure headers repeat across messages; caching per-message ones
        # (Message-ID, To, Date) would only fill the cache.
        if (not hasattr(value, "name") and len(value) <= _MAX_CACHED_HEADER
                and name[:8].lower() in ("content-", "mime-ver")):
            return _parsed_header(self, name, value)
        return super().header_fetch_parse(name, value)

    def fold_binary(self, name: str, value: Any) -> bytes:
        if hasattr(value, "name"):  # a header the gateway set or changed: fold it normally
            return super().fold_binary(name, value)
        lines = _SOURCE_LINE_BREAK.split(value)
        folded = name + ": " + self.linesep.join(lines) + self.linesep
        return folded.encode("ascii", "surrogateescape")


_MAX_CACHED_HEADER = 2000  # characters; longer values are parsed on every fetch


@functools.lru_cache(maxsize=4096)
def _parsed_header(policy: EmailPolicy, name: str, value: str) -> Any:
    return EmailPolicy.header_fetch_parse(policy, name, value)


_SOURCE_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# New headers are never folded: a long URL in an unstructured header would otherwise be
# turned into an RFC 2047 encoded word.
POLICY = _SourcePolicy(linesep="\r\n", refold_source="none", max_line_length=0)

HEADERS_ONLY_TYPES = frozenset({"multipart/signed", "multipart/encrypted",
                                "application/pkcs7-mime", "application/x-pkcs7-mime"})
PLACEHOLDER = re.compile(r"\{\{[ \t]*unsubscribe_url[ \t]*\}\}|%7[Bb]%7[Bb]unsubscribe_url%7[Dd]%7[Dd]")


def _has_placeholder(text: str) -> bool:
    # Every form of the placeholder spells out "unsubscribe_url": a quick test first.
    return "unsubscribe_url" in text and PLACEHOLDER.search(text) is not None


BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
HEADER_END = re.compile(rb"\r?\n\r?\n")
KNOWN_CTES = frozenset({"7bit", "8bit", "binary", "quoted-printable", "base64"})
STRUCTURE_DEFECTS = (email_errors.NoBoundaryInMultipartDefect,
                     email_errors.StartBoundaryNotFoundDefect,
                     email_errors.MultipartInvariantViolationDefect)
# Missing "=" padding decodes exactly and is tolerated; these would lose or garble text.
DECODE_DEFECTS = (email_errors.InvalidBase64CharactersDefect,
                  email_errors.InvalidBase64LengthDefect)
MAX_LINE_OCTETS = 998  # RFC 5322 2.1.1
_LINE_BREAK = re.compile(rb"\r?\n")


class UnrewritableMessage(GatewayError):
    """The message's MIME structure cannot be rewritten without breaking it; refuse it."""


@dataclass(frozen=True)
class RewriteResult:
    """One recipient's copy, ready to sign and spool."""

    data: bytes
    headers_only: bool
    original_reply_to: str | None
    message_id: str


@dataclass
class _TextPart:
    """A displayable part with its decoded text, while it is being rewritten."""

    part: Message
    text: str
    charset: str
    is_html: bool
    # The part's body as it came (transfer-encoded) and decoded: what a quoted-printable
    # re-encoding keeps up to the change (_encode_body).
    before: tuple[bytes, bytes] | None = None


def rewrite_for_recipient(
    raw: bytes,
    *,
    unsubscribe_url: str,
    mailto_url: str,
    reply_to: str | None,
    footer_text: str,
    footer_html: str,
    remove_headers_prefix: str = "X-Gateway-",
) -> RewriteResult:
    """Return the copy of `raw` for one recipient, with CRLF line endings.

    `original_reply_to` is the Reply-To (or From) that `reply_to` replaced, as it was
    written (unfolded, RFC 2047 words left encoded), None when `reply_to` is None. Raises
    UnrewritableMessage when the MIME cannot be safely changed.
    """
    for value in (unsubscribe_url, mailto_url, reply_to or ""):
        if "\r" in value or "\n" in value:
            raise ValueError(f"header value contains a line break: {value!r}")
    fast = _fast_rewrite(raw, unsubscribe_url, mailto_url, reply_to, footer_text, footer_html,
                         remove_headers_prefix)
    if fast is not None:
        return fast
    msg = BytesParser(policy=POLICY).parsebytes(raw)
    headers_only = msg.get_content_type() in HEADERS_ONLY_TYPES
    if not headers_only:
        msg = _rewrite_body(msg, unsubscribe_url, footer_text, footer_html)
    _remove_headers(msg, remove_headers_prefix)
    _replace_header(msg, "List-Unsubscribe", f"<{unsubscribe_url}>, <{mailto_url}>")
    _replace_header(msg, "List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    original_reply_to = None
    if reply_to is not None:
        original_reply_to = _raw_header(msg, "Reply-To") or _raw_header(msg, "From")
        _replace_header(msg, "Reply-To", reply_to)
    message_id = _ensure_message_id(msg)
    data = _serialise_headers_only(msg, raw) if headers_only else _serialise(msg)
    return RewriteResult(data, headers_only, original_reply_to, message_id)


# --- body ----------------------------------------------------------------------------------


def _rewrite_body(msg: Message, url: str, footer_text: str, footer_html: str) -> Message:
    """Replace the placeholder everywhere it may be, or else add the footers."""
    parts = [_decode(part) for part in _display_parts(msg)]
    if not parts:
        return _add_footer_part(msg, footer_text)
    if any(_has_placeholder(p.text) for p in parts):
        for p in parts:
            link = html.escape(url, quote=True) if p.is_html else url
            new_text = PLACEHOLDER.sub(lambda _m, link=link: link, p.text)
            if new_text != p.text:
                _store(p, new_text)
    else:
        for p in parts:
            _store(p, _with_footer(p, footer_text, footer_html))
    return msg


def _display_parts(part: Message) -> Iterator[Message]:
    """Yield the text/plain and text/html parts meant for display, checking structure.

    Forwarded messages (message/*) and signed or encrypted subtrees are not entered.
    """
    ctype = part.get_content_type()
    if part.get_content_maintype() == "multipart":
        if not isinstance(part.get_payload(), list) or any(
            isinstance(d, STRUCTURE_DEFECTS) for d in part.defects
        ):
            raise UnrewritableMessage(
                f"{ctype} part has a missing or unmatched boundary, so its parts cannot be "
                "found; fix the sender's MIME (boundary parameter and delimiter lines)"
            )
        if ctype not in HEADERS_ONLY_TYPES:
            for sub in part.iter_parts():
                yield from _display_parts(sub)
    elif ctype in ("text/plain", "text/html") and not part.is_attachment():
        yield part


def _decode(part: Message) -> _TextPart:
    """Decode a text part to str; undecodable bytes survive as surrogate escapes."""
    cte = _cte(part)
    if cte not in KNOWN_CTES:
        raise UnrewritableMessage(f"text part has unknown Content-Transfer-Encoding {cte!r}")
    data = part.get_payload(decode=True)
    if any(isinstance(d, DECODE_DEFECTS) for d in part.defects):
        raise UnrewritableMessage("text part has broken base64; the sender must re-encode it")
    charset = part.get_content_charset() or "us-ascii"
    try:
        text = data.decode(charset, "surrogateescape")
        ascii_compatible = "a=\n".encode(charset) == b"a=\n"
    except (LookupError, ValueError):
        raise UnrewritableMessage(f"text part declares unknown charset {charset!r}") from None
    if not ascii_compatible:  # UTF-16 and the like cannot be safely appended to
        raise UnrewritableMessage(f"text part uses {charset!r}, unsuitable for mail text")
    before = (part.get_payload().encode("ascii", "surrogateescape"), data) \
        if cte == "quoted-printable" else None
    return _TextPart(part, text, charset, part.get_content_subtype() == "html", before)


def _with_footer(p: _TextPart, footer_text: str, footer_html: str) -> str:
    """The part's text with the footer: HTML before the last </body>, plain text at the end."""
    eol = "\r\n" if "\r\n" in p.text else "\n"
    if p.is_html:
        footer = _with_eol(footer_html, eol)
        closes = list(BODY_CLOSE.finditer(p.text))
        if not closes:
            return p.text + footer
        at = closes[-1].start()
        return p.text[:at] + footer + p.text[at:]
    body = p.text if p.text.endswith("\n") or not p.text else p.text + eol
    footer = _with_eol(footer_text, eol)
    return body + eol + footer + ("" if footer.endswith(eol) else eol)


def _with_eol(text: str, eol: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", eol)


def _store(p: _TextPart, new_text: str) -> None:
    """Encode new text into the part: its own charset if possible, else UTF-8."""
    charset = p.charset
    try:
        data = new_text.encode(charset, "surrogateescape")
    except UnicodeEncodeError:
        charset = "utf-8"
        data = new_text.encode(charset, "surrogateescape")
    payload, cte = _encode_body(data, _cte(p.part), p.before if charset == p.charset else None)
    p.part.set_payload(payload)
    if cte != _cte(p.part):
        del p.part["Content-Transfer-Encoding"]
        p.part.set_raw("Content-Transfer-Encoding", cte)
    if charset != p.charset:
        _set_charset(p.part, charset)


def _set_charset(part: Message, charset: str) -> None:
    """Change the charset parameter; refuse a Content-Type too mangled to rewrite."""
    try:
        part.set_param("charset", charset, replace="Content-Type" in part)
        mangled = not str(part.get("Content-Type", "")).isascii()
    except ValueError:  # the header value holds control characters
        mangled = True
    if mangled:
        raise UnrewritableMessage(
            "text part has a malformed Content-Type header (control or 8-bit characters); "
            "the sender must write it in plain ASCII"
        )


def _encode_body(data: bytes, cte: str, before: tuple[bytes, bytes] | None = None
                 ) -> tuple[str, str]:
    """Encode body bytes, keeping the transfer encoding unless it is no longer safe.
    `before`: the part's body as it came, encoded and decoded, for a quoted-printable part
    whose charset stays: its encoded lines before the change are kept (_qp_kept)."""
    if cte == "base64":
        return base64.encodebytes(data).decode("ascii"), cte
    if cte == "quoted-printable":
        kept, start = _qp_kept(before, data) if before else (b"", 0)
        return (kept + _quoted_printable(data[start:]).encode("ascii")).decode("ascii"), cte
    # Lines split at LF alone are never shorter: only when one is too long, look closer.
    long_line = len(data) > MAX_LINE_OCTETS and \
        max(map(len, data.split(b"\n"))) > MAX_LINE_OCTETS and \
        max(map(len, _LINE_BREAK.split(data))) > MAX_LINE_OCTETS
    if long_line or (cte == "7bit" and not data.isascii()):
        return _quoted_printable(data), "quoted-printable"
    # 8-bit bytes ride in the str as surrogate escapes, as the parser stores them.
    return data.decode("ascii", "surrogateescape"), cte


def _qp_kept(before: tuple[bytes, bytes], new: bytes) -> tuple[bytes, int]:
    """How much of a quoted-printable body can stay as it came when its decoded bytes
    become `new`: (the encoded lines kept, how many bytes of `new` they decode to).

    The footer changes a body at its end or before `</body>`; re-encoding all of it cost a
    third of a rewrite. Quoted-printable is line-local (RFC 2045 6.7): an encoded line
    that ends in a line break, hard or soft (`=`), decodes on its own, and what follows it
    may be encoded afresh. So the encoded body is kept up to the last line break whose
    decoded offset lies before the first byte that changed, when that prefix decodes to
    exactly those bytes and has no line over 998 octets; else nothing is kept ((b"", 0))."""
    encoded, old = before
    # The first byte that differs (a binary search over slices: memcmp, not a loop).
    low, high = 0, min(len(old), len(new))
    while low < high:
        mid = (low + high + 1) // 2
        if old[:mid] == new[:mid]:
            low = mid
        else:
            high = mid - 1
    # A change near the end (the usual footer): look back a few lines from the end. Else
    # the last line break within the first `low` encoded octets, which decode to no more.
    pos, looks = len(encoded), 8
    while (pos := encoded.rfind(b"\n", 0, pos if looks else min(pos, low))) >= 0:
        end, looks = pos + 1, max(0, looks - 1)
        # Each "=XX" decodes to one byte, each soft break "=CRLF" to none.
        decoded = end - 2 * encoded.count(b"=", 0, end) - encoded.count(b"=\r\n", 0, end)
        if 0 <= decoded <= low:
            prefix = encoded[:end]
            if quopri.decodestring(prefix) == old[:decoded] and \
                    max(map(len, prefix.split(b"\n"))) <= MAX_LINE_OCTETS + 1:
                return prefix, decoded
            break
    return b"", 0


def _quoted_printable(data: bytes) -> str:
    """RFC 2045 6.7 by binascii's encoder (C; the email package's is Python and a fifth of a
    rewrite's time): line breaks stay hard breaks, encoded lines are at most 76 octets,
    whitespace ending a line is encoded. A lone CR is a line break, as the generator writes it
    (binascii would pass it through raw)."""
    if data.count(b"\r") != data.count(b"\r\n"):
        data = _F_NL.sub(b"\n", data)
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).decode("ascii")


def _cte(part: Message) -> str:
    return str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()


def _add_footer_part(msg: Message, footer_text: str) -> Message:
    """Give a message with no displayable text a text/plain footer part.

    Appended to a top-level multipart/mixed; otherwise the message becomes the first part
    of a new multipart/mixed that takes over its non-Content-* headers.
    """
    footer = EmailMessage(policy=POLICY)
    footer.set_raw("Content-Type", 'text/plain; charset="utf-8"')
    footer.set_raw("Content-Transfer-Encoding", "7bit")
    footer.set_raw("Content-Disposition", "inline")
    _store(_TextPart(footer, "", "utf-8", False), _with_eol(footer_text, "\n"))
    if msg.get_content_type() == "multipart/mixed":
        msg.attach(footer)
        return msg
    outer = EmailMessage(policy=POLICY)
    for name, value in msg.raw_items():
        if not name.lower().startswith("content-"):
            outer.set_raw(name, value)
    for name in {n for n in msg if not n.lower().startswith("content-")}:
        del msg[name]
    if "MIME-Version" not in outer:
        outer.set_raw("MIME-Version", "1.0")
    outer.set_raw("Content-Type", f'multipart/mixed; boundary="=_gw_{secrets.token_hex(16)}"')
    outer.set_payload([msg, footer])
    return outer


# --- headers and output --------------------------------------------------------------------


def _remove_headers(msg: Message, prefix: str) -> None:
    """Delete every header whose name starts with `prefix`, in any case."""
    for name in {n for n in msg if n.lower().startswith(prefix.lower())}:
        del msg[name]


def _replace_header(msg: Message, name: str, value: str) -> None:
    """Set one header, replacing all others of that name; ASCII values go out verbatim."""
    del msg[name]
    if value.isascii():
        msg.set_raw(name, value)
    else:
        msg[name] = value


def _ensure_message_id(msg: Message) -> str:
    """Return the Message-ID, adding one (in the From domain) when missing."""
    existing = _raw_header(msg, "Message-ID")
    if existing:
        return existing
    domain = parseaddr(_raw_header(msg, "From") or "")[1].rpartition("@")[2]
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", domain):
        domain = "gateway.invalid"
    message_id = make_msgid(domain=domain)
    _replace_header(msg, "Message-ID", message_id)
    return message_id


def _raw_header(msg: Message, name: str) -> str | None:
    """The first `name` header as written, unfolded; never parsed, as parsers can choke."""
    for key, value in msg.raw_items():
        if key.lower() == name.lower():
            text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            return re.sub(r"\r?\n", "", text).strip() or None
    return None


class _Generator(BytesGenerator):
    """BytesGenerator that writes a multipart the parser could not split (no boundary;
    kept as it came inside a forwarded or signed part) byte for byte. The stock one
    reads such a payload through get_payload(), which turns 8-bit bytes into U+FFFD,
    and then fails to encode them."""

    def _handle_multipart(self, msg: Message) -> None:
        if isinstance(msg._payload, str):
            self._write_lines(msg._payload)
            return
        super()._handle_multipart(msg)


def _serialise(msg: Message) -> bytes:
    out = BytesIO()
    _Generator(out, policy=POLICY).flatten(msg)
    return out.getvalue()


def _serialise_headers_only(msg: Message, raw: bytes) -> bytes:
    """New header block + the original body, byte for byte (line endings made CRLF)."""
    if any(isinstance(d, email_errors.MissingHeaderBodySeparatorDefect) for d in msg.defects):
        # The parser's body then starts at a stray line, not after a blank line.
        raise UnrewritableMessage("signed or encrypted message has a line that is not a "
                                  "header in its header block; the sender must fix it")
    head = b"".join(POLICY.fold_binary(name, value) for name, value in msg.raw_items())
    split = HEADER_END.split(raw, maxsplit=1)
    body = split[1] if len(split) == 2 else b""
    return head + b"\r\n" + re.sub(rb"\r?\n", b"\r\n", body)


# --- fast path -----------------------------------------------------------------------------
#
# Most marketing mail is a plain single part or a simple multipart/alternative (maybe inside
# a multipart/mixed) with 7bit/8bit text parts and CRLF line endings. For such a message
# `_fast_rewrite` computes, without the email package, exactly the bytes the parse /
# rewrite / generate path above produces (the generator's rules are mirrored: source
# headers written as `Name: value`, the line break before a delimiter belongs to it,
# a nested multipart's empty epilogue vanishes...). Whatever it is not sure of makes it
# answer None, and the full path runs: anything unusual (a bare CR or LF, a header line
# the parser would read differently, a Content-Type beyond plain `type/sub; a=b` syntax,
# duplicate MIME headers, transfer padding or repeated delimiter lines, message/* or
# signed parts, quoted-printable or base64 text, a charset or transfer-encoding change,
# no displayable part, no Message-ID, a non-ASCII header to add).

_F_HEADER = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")
# The parser's header-line test (feedparser.headerRE): a line it takes as a header.
_F_PARSER_HEADER = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
_F_TOKEN = r"[!#$%&'+\-.0-9A-Z^_`a-z{|}~]+"
_F_PARAM = r";[ \t]*([A-Za-z0-9_.\-]+)=(" + _F_TOKEN + r'|"[^"\\\x00-\x1f\x7f]*")[ \t]*'
_F_CTYPE = re.compile(r"[ \t]*(" + _F_TOKEN + r"/" + _F_TOKEN + r")[ \t]*((?:" + _F_PARAM
                      + r")*)")
_F_DISPOSITION = re.compile(r"[ \t]*(" + _F_TOKEN + r")[ \t]*((?:" + _F_PARAM + r")*)")
_F_PARAMS = re.compile(_F_PARAM)
_F_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=?]{1,70}")
_F_NL = re.compile(rb"\r\n|\r|\n")
_F_MIME = {b"content-type", b"content-transfer-encoding", b"content-disposition"}
_F_TEXT_CTES = frozenset({"7bit", "8bit", "quoted-printable", "base64"})


class _FastFallback(Exception):
    """The fast path is not sure: use the full parse."""


@dataclass
class _FPart:
    headers: list[tuple[bytes, bytes]]  # (name, value as the parser stores it), CRLF inside
    ctype: str
    params: dict[str, str]
    disposition: str | None
    cte: str
    children: list[_FPart] | None = None  # multipart
    boundary: bytes = b""
    preamble: bytes | None = None
    epilogue: bytes | None = None
    payload: bytes = b""  # leaf


def _f_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in _F_PARAMS.findall(text):
        if len(value) > 1 and value[0] == '"':
            value = value[1:-1]
        params.setdefault(name.lower(), value)
    return params


def _f_headers(lines: list[bytes], i: int, end: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """Header fields from lines[i:end]; returns them and the index after the blank line."""
    headers: list[tuple[bytes, bytes]] = []
    while i < end:
        line = lines[i]
        if not line:
            return headers, i + 1
        if line[:1] in (b" ", b"\t"):
            if not headers:
                raise _FastFallback
            name, value = headers[-1]
            headers[-1] = (name, value + b"\r\n" + line)
        else:
            m = _F_HEADER.match(line)
            if m is None:  # the parser would see a defect or another kind of line
                raise _FastFallback
            headers.append((line[:m.end() - 1], line[m.end():].lstrip(b" \t")))
        i += 1
    raise _FastFallback  # no blank line before the part's end


def _f_part(lines: list[bytes], dashes: list[int], i: int, end: int,
            enclosing: list[re.Pattern], default_type: str) -> _FPart:
    """The part in lines[i:end]; `dashes`: the indices of the lines starting with "--"."""
    headers, i = _f_headers(lines, i, end)
    mime: dict[bytes, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in _F_MIME:
            if key in mime or not value.isascii():
                raise _FastFallback
            mime[key] = value.replace(b"\r\n", b"").decode("ascii")
    ctype, params = default_type, {}
    if b"content-type" in mime:
        m = _F_CTYPE.fullmatch(mime[b"content-type"])
        if m is None:
            raise _FastFallback
        ctype, params = m.group(1).lower(), _f_params(m.group(2))
    disposition = None
    if b"content-disposition" in mime:
        m = _F_DISPOSITION.fullmatch(mime[b"content-disposition"])
        if m is None:
            raise _FastFallback
        disposition = m.group(1).lower()
    cte = mime.get(b"content-transfer-encoding", "7bit").strip().lower()
    part = _FPart(headers, ctype, params, disposition, cte)
    maintype = ctype.partition("/")[0]
    if maintype == "message" or ctype in HEADERS_ONLY_TYPES or ctype == "multipart/digest":
        raise _FastFallback
    if maintype != "multipart":
        if i >= end:
            raise _FastFallback  # an empty body
        part.payload = b"\r\n".join(lines[i:end])
        return part
    boundary = params.get("boundary")
    if boundary is None or not _F_BOUNDARY.fullmatch(boundary):
        raise _FastFallback
    part.boundary = boundary.encode("ascii")
    own = re.compile(re.escape(b"--" + part.boundary) + rb"(--)?([ \t]*)$")
    inner = enclosing + [own]
    # The delimiter lines of this multipart: the parts lie between them.
    delimiters: list[int] = []
    close = -1
    for j in dashes[bisect.bisect_left(dashes, i):bisect.bisect_left(dashes, end)]:
        line = lines[j]
        if any(p.match(line) for p in enclosing):
            raise _FastFallback  # an enclosing boundary before our close delimiter
        m = own.match(line)
        if m:
            if m.group(2) or (delimiters and delimiters[-1] == j - 1):
                raise _FastFallback  # transport padding, or an empty part
            if m.group(1):
                close = j
                break
            delimiters.append(j)
    if close < 0 or not delimiters or delimiters[-1] == close - 1:
        raise _FastFallback
    part.preamble = b"\r\n".join(lines[i:delimiters[0]]) if delimiters[0] > i else None
    part.children = []
    bounds = delimiters + [close]
    for k in range(len(delimiters)):
        # No line between two delimiters matches this or an enclosing boundary (the scan
        # above), so the part runs exactly from one delimiter to the next.
        part.children.append(_f_part(lines, dashes, bounds[k] + 1, bounds[k + 1], inner,
                                     "text/plain"))
    # None: no line after the close delimiter (before the enclosing delimiter or the end).
    part.epilogue = b"\r\n".join(lines[close + 1:end]) if close + 1 < end else None
    return part


def _f_display_parts(part: _FPart) -> Iterator[_FPart]:
    if part.children is not None:
        for sub in part.children:
            yield from _f_display_parts(sub)
    elif part.ctype in ("text/plain", "text/html") and part.disposition != "attachment":
        yield part


def _f_serialise(part: _FPart, out: list[bytes], payloads: dict[int, bytes],
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """`part` as bytes, with `payloads` (by id of the leaf part) in place of the bodies
    it names and `headers` in place of its own."""
    for name, value in part.headers if headers is None else headers:
        out.append(name + b": " + value + b"\r\n")
    out.append(b"\r\n")
    if part.children is None:
        out.append(payloads.get(id(part), part.payload))
        return
    if part.preamble is not None:
        out.append(part.preamble + b"\r\n")
    delimiter = b"--" + part.boundary
    for k, sub in enumerate(part.children):
        out.append((b"\r\n" if k else b"") + delimiter + b"\r\n")
        _f_serialise(sub, out, payloads)
    out.append(b"\r\n" + delimiter + b"--\r\n")
    out.append(part.epilogue or b"")


@dataclass(frozen=True)
class _FMessage:
    """A message as the fast path read it: what every recipient's copy starts from, never
    changed (copies differ only in what `_fast_rewrite` makes of it)."""

    msg: _FPart
    parts: list[_FPart]  # the displayable parts
    texts: list[_TextPart]  # their decoded texts, in the same order
    placeholder: bool  # a text holds the unsubscribe placeholder


# The last message read, with what was read: a message's copies (one per recipient) are
# rewritten one after another, and the reading is the dearer half of a rewrite.
_last_read: tuple[bytes, _FMessage | None] = (b"", None)


def _f_read(raw: bytes) -> _FMessage | None:
    """`_f_read_now(raw)`, once for the copies of one message (kept by `raw`'s identity:
    the same bytes object, held here so its id is never another's)."""
    global _last_read
    last = _last_read
    if last[0] is raw:
        return last[1]
    found = _f_read_now(raw)
    _last_read = (raw, found)
    return found


def _f_read_now(raw: bytes) -> _FMessage | None:
    """The message's parts and displayable texts, or None when the full path must run."""
    crlf = raw.count(b"\r\n")
    if not raw.endswith(b"\r\n") or raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
        return None
    lines = raw[:-2].split(b"\r\n")
    try:
        dashes = [k for k, line in enumerate(lines) if line[:2] == b"--"]
        msg = _f_part(lines, dashes, 0, len(lines), [], "text/plain")
        if msg.children is None:
            msg.payload += b"\r\n"  # the top-level body keeps its last line break
        else:
            # The parser keeps the top level's epilogue whole, its last line break too.
            msg.epilogue = b"" if msg.epilogue is None else msg.epilogue + b"\r\n"
        parts = list(_f_display_parts(msg))
        if not parts:
            return None
        texts = []
        for p in parts:
            if p.cte not in _F_TEXT_CTES or any(
                    n.lower() == b"content-transfer-encoding" and v != p.cte.encode()
                    for n, v in p.headers):
                return None  # get_payload() would not decode it as _cte() reads it
            charset = p.params.get("charset", "us-ascii").lower() or "us-ascii"
            if not charset.isascii():
                return None
            data = p.payload
            if p.cte == "quoted-printable":
                data = quopri.decodestring(data)
            elif p.cte == "base64":
                data, defects = _encoded_words.decode_b(b"".join(data.splitlines()))
                if any(isinstance(d, DECODE_DEFECTS) for d in defects):
                    return None
            try:
                text = data.decode(charset, "surrogateescape")
                if "a=\n".encode(charset) != b"a=\n":
                    return None
            except (LookupError, ValueError):
                return None
            texts.append(_TextPart(None, text, charset, p.ctype == "text/html",  # type: ignore[arg-type]
                                   (p.payload, data) if p.cte == "quoted-printable" else None))
    except (_FastFallback, UnicodeError):
        return None
    return _FMessage(msg, parts, texts, any(_has_placeholder(t.text) for t in texts))


def _fast_rewrite(raw: bytes, url: str, mailto_url: str, reply_to: str | None,
                  footer_text: str, footer_html: str, prefix: str) -> RewriteResult | None:
    """The rewrite without the email package, or None when the full path must run."""
    new_headers = [("List-Unsubscribe", f"<{url}>, <{mailto_url}>"),
                   ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]
    if reply_to is not None:
        new_headers.append(("Reply-To", reply_to))
    if not all(value.isascii() for _, value in new_headers):
        return None
    read = _f_read(raw)
    if read is None:
        return None
    texts = read.texts
    payloads: dict[int, bytes] = {}
    try:
        if read.placeholder:
            new_texts = []
            for t in texts:
                link = html.escape(url, quote=True) if t.is_html else url
                new_texts.append(PLACEHOLDER.sub(lambda _m, link=link: link, t.text))
        else:
            new_texts = [_with_footer(t, footer_text, footer_html) for t in texts]
        for p, t, new_text in zip(read.parts, texts, new_texts):
            if new_text == t.text:
                continue
            data = new_text.encode(t.charset, "surrogateescape")
            payload, cte = _encode_body(data, p.cte, t.before)
            if cte != p.cte:
                return None
            encoded = payload.encode("ascii", "surrogateescape")
            crlf = encoded.count(b"\r\n")
            if encoded.count(b"\n") != crlf or encoded.count(b"\r") != crlf:
                encoded = _F_NL.sub(b"\r\n", encoded)  # as the generator writes lines
            payloads[id(p)] = encoded
    except UnicodeError:
        return None
    lower_prefix = prefix.lower().encode("ascii", "surrogateescape")
    replaced = {name.lower().encode() for name, _ in new_headers}
    headers = [(n, v) for n, v in read.msg.headers if not n.lower().startswith(lower_prefix)]
    original_reply_to = None
    if reply_to is not None:
        original_reply_to = _f_raw_header(headers, b"reply-to") or \
            _f_raw_header(headers, b"from")
    headers = [(n, v) for n, v in headers if n.lower() not in replaced]
    message_id = _f_raw_header(headers, b"message-id")
    if not message_id:
        return None
    headers.extend((n.encode(), v.encode()) for n, v in new_headers)
    out: list[bytes] = []
    _f_serialise(read.msg, out, payloads, headers)
    return RewriteResult(b"".join(out), False, original_reply_to, message_id)


def _f_raw_header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """`_raw_header` over the fast path's header list."""
    for key, value in headers:
        if key.lower() == name:
            text = value.decode("ascii", "surrogateescape")
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            return re.sub(r"\r?\n", "", text).strip() or None
    return None
