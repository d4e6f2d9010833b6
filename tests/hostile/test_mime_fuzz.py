"""MIME fuzzing through the real SMTP listener: random trees of parts, charsets, transfer
encodings, broken boundaries and huge headers. Every message is either answered 250 and
delivered as a valid rewritten copy (it parses, carries List-Unsubscribe, and its body
holds the unsubscribe URL), or refused with a clear 5xx. Never a crash, never a 250 for
a message that then goes nowhere.

`MIME_FUZZ_EXAMPLES=2000 pytest tests/hostile/test_mime_fuzz.py -s` runs a bigger
campaign and prints what happened to the messages."""

from __future__ import annotations

import base64
import email
import email.policy
import itertools
import os
import quopri
import re
import smtplib
import time
from collections import Counter
from pathlib import Path

import pytest
from gwprocess import GatewayProcess, seed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLES = int(os.environ.get("MIME_FUZZ_EXAMPLES", "60"))
RECIPIENTS = 4000
OUTCOMES: Counter = Counter()

CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "windows-1252", "koi8-r", "shift_jis",
            "utf-16", "x-unknown-charset", "UTF-8", ""]
ENCODINGS = ["7bit", "8bit", "binary", "quoted-printable", "base64", "x-uuencode", "BASE64",
             ""]
LEAF_TYPES = ["text/plain", "text/html", "text/calendar", "application/octet-stream",
              "application/pdf", "image/png", "message/rfc822", "text/plain; format=flowed",
              "application/pkcs7-mime"]
MULTIPART = ["mixed", "alternative", "related", "signed", "digest", "encrypted"]

header_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
body_text = st.one_of(
    st.text(max_size=300),
    st.text(st.characters(codec="ascii"), max_size=300),
    st.sampled_from(["", "\r\n", ".", "..\r\n.\r\n", "{{unsubscribe_url}}",
                     "<html><body><p>Hi</p></body></html>", "<body>no close", "</BODY >",
                     "=\r\n=3D=ZZ", "line\rwith bare CR", "x" * 2000, "\0nul"]),
)


def encode_body(text: str, charset: str, cte: str, broken: bool) -> bytes:
    try:
        data = text.encode(charset or "us-ascii", "replace")
    except LookupError:
        data = text.encode("utf-8", "surrogatepass") if not broken else b"\xff\xfe" + b"x"
    if cte.lower() == "base64":
        out = base64.encodebytes(data)
        return out[:-3] + b"!!\n" if broken and len(out) > 4 else out
    if cte == "quoted-printable":
        return quopri.encodestring(data) + (b"=Z" if broken else b"")
    return data


@st.composite
def leaf(draw) -> bytes:
    ctype = draw(st.sampled_from(LEAF_TYPES))
    charset = draw(st.sampled_from(CHARSETS))
    cte = draw(st.sampled_from(ENCODINGS))
    broken = draw(st.booleans())
    disposition = draw(st.sampled_from(["", "inline", "attachment; filename=\"a.txt\""]))
    if ctype == "message/rfc822" and draw(st.booleans()):
        body = draw(message_bytes(depth=2))
        cte = draw(st.sampled_from(["7bit", "8bit", ""]))
    else:
        body = encode_body(draw(body_text), charset, cte, broken)
    head = f"Content-Type: {ctype}" + (f"; charset={charset}" if charset else "")
    lines = [head]
    if cte:
        lines.append(f"Content-Transfer-Encoding: {cte}")
    if disposition:
        lines.append(f"Content-Disposition: {disposition}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body


@st.composite
def node(draw, depth: int) -> bytes:
    if depth <= 0 or draw(st.integers(0, 2)) == 0:
        return draw(leaf())
    subtype = draw(st.sampled_from(MULTIPART))
    boundary = draw(st.sampled_from(["b1", "=_x", "simple boundary", "a" * 70, "b1",
                                     "--", "'()+_,-./:=?"]))
    children = draw(st.lists(node(depth - 1), max_size=4))
    flaw = draw(st.sampled_from(["none"] * 5 + ["no-param", "wrong-delimiter", "no-close",
                                                 "no-open", "nested-same"]))
    declared = "" if flaw == "no-param" else f'; boundary="{boundary}"'
    used = boundary + "X" if flaw == "wrong-delimiter" else boundary
    out = f"Content-Type: multipart/{subtype}{declared}\r\n\r\npreamble\r\n".encode()
    for i, child in enumerate(children):
        if not (flaw == "no-open" and i == 0):
            out += f"--{used}\r\n".encode()
        out += child + b"\r\n"
    if flaw != "no-close":
        out += f"--{used}--\r\n".encode()
    return out + b"epilogue\r\n"


@st.composite
def extra_headers(draw) -> bytes:
    headers = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["plain", "encoded", "huge", "folded", "raw8bit",
                                     "gateway", "reply-to", "dkim"]))
        value = draw(header_text)
        if kind == "encoded":
            b64 = base64.b64encode(value.encode()).decode()
            headers.append(f"X-Note: =?utf-8?b?{b64}?= =?bogus?q?x=ZZ?=")
        elif kind == "huge":
            size = draw(st.sampled_from([900, 5000, 30000]))
            headers.append("X-Huge: " + ("word " * (size // 5) if draw(st.booleans())
                                         else "w" * size))
        elif kind == "folded":
            headers.append("X-Folded: a\r\n\tb\r\n  " + value.replace("\r", "").replace("\n", ""))
        elif kind == "raw8bit":
            headers.append("X-Raw: " + value.replace("\r", "").replace("\n", ""))
        elif kind == "gateway":
            headers.append("X-Gateway-Category: " + draw(st.sampled_from(
                ["lawnmowers", "decking", "", "x" * 300])))
        elif kind == "reply-to":
            headers.append("Reply-To: " + draw(st.sampled_from(
                ["a@b.test", "<>", "\"x\" <y@z.test>, bad", "=?utf-8?q?=E2=9C=93?= <c@d.test>"])))
        elif kind == "dkim":
            headers.append("DKIM-Signature: v=1; a=rsa-sha256; d=acme.test; s=x; b=AAAA")
        else:
            headers.append("X-Plain: " + value.replace("\r", " ").replace("\n", " "))
    return "".join(h + "\r\n" for h in headers).encode("utf-8", "surrogatepass")


@st.composite
def message_bytes(draw, depth: int = 3) -> bytes:
    top = draw(node(depth))
    head, _, rest = top.partition(b"\r\n\r\n")
    mime = b"MIME-Version: 1.0\r\n" if draw(st.booleans()) else b""
    line_end = draw(st.sampled_from([b"\r\n"] * 4 + [b"\n"]))
    data = (b"From: News <news@acme.test>\r\nSubject: " +
            draw(header_text).replace("\r", " ").replace("\n", " ").encode() + b"\r\n" +
            draw(extra_headers()) + mime + head + b"\r\n\r\n" + rest)
    return data.replace(b"\r\n", line_end) if line_end != b"\r\n" else data


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mimefuzz")
    gw = GatewayProcess(tmp, f"maildir:{tmp / 'outbox'}")
    seed(gw.data_dir, emails=[f"f{i}@example.com" for i in range(RECIPIENTS)])
    gw.start()
    yield gw
    gw.terminate()
    print(f"\nMIME fuzz outcomes ({sum(OUTCOMES.values())} messages): "
          f"{dict(OUTCOMES.most_common())}")


def delivered_copy(outbox: Path, rcpt: str, timeout: float = 10.0) -> bytes:
    """The maildir file delivered to `rcpt` (Delivered-To is the first thing we look at)."""
    marker = f"Delivered-To: {rcpt}\r\n".encode()
    deadline = time.monotonic() + timeout
    seen: set[Path] = set()
    while time.monotonic() < deadline:
        new = outbox / "new"
        for path in (new.iterdir() if new.exists() else ()):
            if path in seen:
                continue
            data = path.read_bytes()
            if marker in data[:400]:
                return data
            seen.add(path)
        time.sleep(0.02)
    raise AssertionError(f"250 answered, but nothing delivered to {rcpt}")


def bodies(msg: email.message.Message) -> str:
    """Every text the reader can see, decoded as best we can."""
    texts = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        texts.append(payload.decode("utf-8", "replace"))
        texts.append(payload.decode("latin-1"))
    return "\n".join(texts)


counter = itertools.count()


@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=message_bytes())
def test_a_fuzzed_message_is_delivered_rewritten_or_clearly_refused(gateway, data):
    rcpt = f"f{next(counter) % RECIPIENTS}@example.com"
    data = f"To: {rcpt}\r\n".encode() + data
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
        client.login("acme-news", "news-pass")
        try:
            client.sendmail("news@acme.test", [rcpt], data)
        except smtplib.SMTPDataError as exc:
            text = exc.smtp_error.decode("utf-8", "replace")
            assert 500 <= exc.smtp_code < 600, f"{exc.smtp_code} {text}"
            assert "Error: (" not in text, f"the handler crashed: {text}"
            why = re.search(r"safely \((.*)", text)
            OUTCOMES[f"{exc.smtp_code} {why.group(1)[:50] if why else text[:50]}"] += 1
            return
    copy = delivered_copy(gateway.tmp_path / "outbox", rcpt)
    msg = email.message_from_bytes(copy, policy=email.policy.default)
    unsubscribe = str(msg["List-Unsubscribe"])
    url = re.search(r"<(https?://[^>]+/u/[a-z2-7]{32})>", unsubscribe)
    assert url, f"no unsubscribe URL in {unsubscribe!r}"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert len(msg.get_all("List-Unsubscribe")) == 1
    assert not any(name.lower().startswith("x-gateway-") for name in msg)
    if msg.get_content_type() in ("multipart/signed", "multipart/encrypted",
                                  "application/pkcs7-mime"):
        OUTCOMES["250 headers only (signed/encrypted)"] += 1
        return
    assert url.group(1) in bodies(msg), "the body does not carry the unsubscribe URL"
    OUTCOMES["250 rewritten"] += 1
