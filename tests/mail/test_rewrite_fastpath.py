"""The rewrite's fast path (`_fast_rewrite`) must produce exactly the bytes of the full
parse / rewrite / generate path, or step aside (None)."""

from __future__ import annotations

import random
import re
import zlib
from pathlib import Path

import pytest

from gateway.mail import rewrite as rw

CORPUS = Path(__file__).parent / "corpus"
URL = "https://gw.example.test/u/TOKEN123"
ARGS = {"unsubscribe_url": URL, "mailto_url": "mailto:unsubscribe+TOKEN123@unsub.example.test",
        "reply_to": "reply+TOKEN123@unsub.example.test",
        "footer_text": f"You get this as a customer. Unsubscribe: {URL}\n",
        "footer_html": f'<p style="font-size:small"><a href="{URL}">Unsubscribe</a></p>\n'}
FILES = sorted(p.name for p in CORPUS.glob("*.eml"))

ALTERNATIVE = (
    b"From: Acme News <news@acme.test>\r\nTo: <a@example.com>\r\nSubject: Offers\r\n"
    b"Message-ID: <m1@acme.test>\r\nMIME-Version: 1.0\r\nX-Gateway-Purpose: marketing\r\n"
    b'Content-Type: multipart/alternative; boundary="=_alt_1"\r\n\r\n'
    b"--=_alt_1\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n\r\nHello garden\r\nsale now\r\n"
    b"--=_alt_1\r\nContent-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n\r\n<html><body><p>Hello</p></body></html>\r\n"
    b"--=_alt_1--\r\n")


def fast(raw: bytes, **overrides):
    a = {**ARGS, **overrides}
    return rw._fast_rewrite(raw, a["unsubscribe_url"], a["mailto_url"], a["reply_to"],
                            a["footer_text"], a["footer_html"], "X-Gateway-")


def full(raw: bytes, monkeypatch, **overrides):
    with monkeypatch.context() as m:
        m.setattr(rw, "_fast_rewrite", lambda *args: None)
        try:
            return rw.rewrite_for_recipient(raw, **{**ARGS, **overrides})
        except rw.UnrewritableMessage as exc:
            return exc


def crlf(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", raw)


def mutations(raw: bytes, n: int, seed: int):
    lines = raw.split(b"\r\n")
    rnd = random.Random(seed)
    inserts = [b"", b" folded", b"X-Gateway-Nature: service", b"{{unsubscribe_url}}",
               "caf\u00e9".encode(), b"Content-Disposition: attachment", b"</body>",
               b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: 8bit",
               b"Content-Type: text/plain; charset=iso-8859-1", b"From nobody", b"x" * 1200,
               b"Reply-To: r@x.test", b"List-Unsubscribe: <old>", b"caf=C3=A9 ="]
    for _ in range(n):
        out = list(lines)
        for _ in range(rnd.randint(1, 3)):
            k = rnd.randrange(len(out))
            op = rnd.randrange(7)
            if op == 0:
                out.insert(k, rnd.choice(inserts))
            elif op == 1:
                del out[k]
            elif op == 2:
                out.insert(k, out[k])
            elif op == 3:
                out[k] += rnd.choice([b" ", b"--"])
            elif op == 4:
                out[k] = out[k].replace(b": ", b":", 1)
            elif op == 5:
                dashes = [x for x in out if x.startswith(b"--")]
                if dashes:
                    out.insert(k, rnd.choice(dashes))
            else:
                out[k] = rnd.choice([out[k].upper(), out[k].lower()])
        yield b"\r\n".join(out)


def test_a_simple_alternative_message_takes_the_fast_path(monkeypatch):
    result = fast(ALTERNATIVE)
    assert result is not None
    assert result == full(ALTERNATIVE, monkeypatch)
    assert b"X-Gateway-" not in result.data and b"\r\nList-Unsubscribe: <" in result.data


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("reply_to", [ARGS["reply_to"], None])
def test_the_fast_path_matches_the_full_path_byte_for_byte(name, reply_to, monkeypatch):
    raw = (CORPUS / name).read_bytes()
    variants = [raw, crlf(raw)]
    if b"message-id:" not in crlf(raw).lower():
        variants.append(b"Message-ID: <added@example.test>\r\n" + crlf(raw))
    variants += list(mutations(variants[-1], 40, zlib.crc32(name.encode())))
    for data in variants:
        result = fast(data, reply_to=reply_to)
        if result is not None:
            assert result == full(data, monkeypatch, reply_to=reply_to)


def test_the_fast_path_steps_aside_when_unsure():
    assert fast(ALTERNATIVE.replace(b"\r\n", b"\n")) is None  # bare LF
    assert fast(ALTERNATIVE.replace(b"Message-ID: <m1@acme.test>\r\n", b"")) is None
    assert fast(ALTERNATIVE.replace(b"--=_alt_1--\r\n", b"")) is None  # no close delimiter
    assert fast(ALTERNATIVE.replace(b"--=_alt_1\r\nContent-Type: text/html",
                                    b"--=_alt_1 \r\nContent-Type: text/html")) is None
    assert fast(ALTERNATIVE, footer_text="Caf\u00e9 \u2603\n") is None  # a 7bit part would need re-encoding
    signed = ALTERNATIVE.replace(b"multipart/alternative", b"multipart/signed")
    assert fast(signed) is None


def recipient(k: int) -> dict:
    url = f"https://gw.example.test/u/TOKEN{k}"
    return {"unsubscribe_url": url, "mailto_url": f"mailto:unsubscribe+TOKEN{k}@unsub.test",
            "reply_to": f"reply+TOKEN{k}@unsub.example.test",
            "footer_text": f"Unsubscribe: {url}\n",
            "footer_html": f'<p><a href="{url}">Unsubscribe</a></p>\n'}


@pytest.mark.parametrize("name", FILES)
def test_copies_of_one_message_in_a_row_are_each_what_the_full_path_makes_for_them(
        name, monkeypatch):
    """The fast path reads a message once for all its copies (`_f_read`): each copy is
    still byte for byte the full path's, and no copy carries another's link."""
    def check(raw: bytes, k: int) -> None:
        result = fast(raw, **recipient(k))
        assert rw._last_read[0] is raw
        if result is not None:
            assert result == full(raw, monkeypatch, **recipient(k))
            assert b"TOKEN%d" % k in result.data
            assert all(b"TOKEN%d" % j not in result.data for j in range(4) if j != k)

    raw = crlf((CORPUS / name).read_bytes())
    for k in range(4):
        check(raw, k)
    for k in range(4):  # two messages' copies interleaved
        check(raw, k)
        check(ALTERNATIVE, k)
