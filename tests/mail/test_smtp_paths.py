"""Shortcuts on the SMTP hot path answer as the slow way does: MAIL FROM / RCPT TO paths as
aiosmtpd's own parser does (plain paths and everything near them), the header block as a
scan of the whole message does."""

from __future__ import annotations

from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mail.session import GatewaySMTP

OURS = GatewaySMTP(Sink())
THEIRS = SMTP(Sink())

CASES = [
    "", "<>", "<a@b>", "<a@b> ", "<a@b>\tSIZE=1", "<a@b>  SIZE=1 BODY=8BITMIME", "<a@b>x",
    "<a@b>(comment) SIZE=1", " <a@b>", "<A.B+c@Example.COM>", "<a..b@c>", "<.a@b>",
    "<a@b.>", "<a@[1.2.3.4]>", '<"a b"@c>', "<@x:a@b>", "<a@b-c.d>", "<a@-b.c>",
    "<a@b_c.d>", "<a@b> SIZE=1 ", "<a@b>\r", "a@b", "<a@b", "a@b>", "<a b@c>",
    "<" + "x" * 64 + "@example.com>", "<" + "x" * 65 + "@example.com>",
    "<rcpt123@example.com>", "<news@acme.test> SIZE=8000 BODY=8BITMIME",
]


def parsed(server: SMTP, arg: str):
    """The answer, or the exception aiosmtpd's parser raises (it does for a lone "<")."""
    try:
        return server._getaddr(arg)
    except Exception as exc:  # noqa: BLE001 - compared, not handled
        return type(exc)


def same(arg: str) -> bool:
    return parsed(OURS, arg) == parsed(THEIRS, arg)


def test_known_paths_parse_as_aiosmtpd_parses_them():
    for arg in CASES:
        assert same(arg), arg


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="<>@.aZ09 \t()\"[]:,;\\-_+=!#~", max_size=24))
def test_any_path_parses_as_aiosmtpd_parses_it(arg):
    assert same(arg)


@settings(max_examples=1000, deadline=None)
@given(st.from_regex(r"<[a-z0-9.+_-]{1,70}@[a-z0-9.-]{1,20}>( [A-Z]+=[0-9A-Z]+)?",
                     fullmatch=True))
def test_plausible_paths_parse_as_aiosmtpd_parses_them(arg):
    assert same(arg)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b"a", b":", b" "]), max_size=40).map(b"".join))
def test_the_header_block_is_everything_before_the_first_empty_line(raw):
    from gateway.mail.copies import _header_block

    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r"), raw.find(b"\r\r")) if i >= 0]
    assert _header_block(raw) == (raw[:min(ends) + 2] if ends else raw)
