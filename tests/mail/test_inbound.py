"""Reading replies for an opt-out: what counts as the subject and the first new line, and
that a reply is read from a bounded prefix in linear time, whatever it holds."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mail.inbound import READ_LIMIT, read_reply

SENDER = "jane@example.com"


def message(body: str | bytes, *, subject: str = "Re: Spring offers",
            content_type: str = "text/plain; charset=utf-8", extra: str = "") -> bytes:
    head = (f"From: Jane <jane@example.com>\r\nTo: reply+x@unsub.gw.test\r\n"
            f"Subject: {subject}\r\nMessage-ID: <r1@example.com>\r\n{extra}"
            f"Content-Type: {content_type}\r\n\r\n").encode()
    return head + (body.encode() if isinstance(body, str) else body)


def opt_out(raw: bytes, mail_from: str = SENDER) -> str | None:
    return read_reply(raw, mail_from).opt_out


HTML_REPLY = """<html><head><title>unsubscribe</title>
<style>p.unsubscribe { color: red }</style>
<script>var unsubscribe = "<p>unsubscribe</p>";</script></head>
<body><div dir="ltr">Please unsubscribe&nbsp;me.</div><br>
<div class="gmail_quote">On Sun, 29 Nov 2026, Acme wrote:<br>
<blockquote>Our hedge trimmers are on sale.</blockquote></div></body></html>
"""


def test_unsubscribe_on_the_first_line_of_an_html_reply_with_script_and_style_is_found():
    assert opt_out(message(HTML_REPLY, content_type="text/html")) == "first line"


def test_words_in_title_style_script_and_comments_are_not_the_first_line():
    html = ("<html><head><title>unsubscribe</title><style>.stop{}</style></head><body>"
            "<script>stop()</script><!-- unsubscribe --><p>See you Saturday.</p>"
            "<p>unsubscribe</p></body></html>")
    assert opt_out(message(html, content_type="text/html")) is None


def test_a_line_break_tag_ends_the_first_line():
    html = "<div>Thanks for the offer<br>unsubscribe</div>"
    assert opt_out(message(html, content_type="text/html")) is None


def test_a_plain_text_part_is_read_before_its_html_alternative():
    raw = message("--b1\r\nContent-Type: text/plain\r\n\r\nPlease stop.\r\n"
                  "--b1\r\nContent-Type: text/html\r\n\r\n<p>Thanks!</p>\r\n--b1--\r\n",
                  content_type='multipart/alternative; boundary="b1"')
    assert opt_out(raw) == "first line"


def test_an_html_part_is_read_when_there_is_no_plain_one():
    raw = message("--outer\r\nContent-Type: multipart/related; boundary=inner\r\n\r\n"
                  "--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                  "<p>remove me please</p>\r\n--inner--\r\n--outer--\r\n",
                  content_type="multipart/mixed; boundary=outer")
    assert opt_out(raw) == "first line"


def test_a_part_without_header_fields_is_plain_text():
    raw = message("--b\r\n\r\nPlease stop.\r\n--b--\r\n",
                  content_type="multipart/mixed; boundary=b")
    assert opt_out(raw) == "first line"


def test_an_attachment_is_not_read_as_the_first_line():
    raw = message("--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\n"
                  "unsubscribe\r\n--b\r\nContent-Type: text/plain\r\n\r\nThanks!\r\n--b--\r\n",
                  content_type="multipart/mixed; boundary=b")
    assert opt_out(raw) is None


@pytest.mark.parametrize("encoding, body", [
    ("base64", base64.encodebytes("Désabonner, merci.\r\n".encode()).decode()),
    ("quoted-printable", "D=C3=A9sabonner, merci.=\r\n\r\n"),
])
def test_a_transfer_encoded_part_is_decoded_in_its_charset(encoding, body):
    raw = message(body, extra=f"Content-Transfer-Encoding: {encoding}\r\n")
    assert opt_out(raw) == "first line"


def test_an_encoded_word_subject_asking_to_opt_out_is_found():
    raw = message("Thanks.\r\n", subject="=?utf-8?q?Re=3A_bitte_abmelden?=")
    assert opt_out(raw) == "subject"


def test_quoted_text_and_an_attribution_are_not_a_first_line():
    body = ("On Sun, 29 Nov 2026, Acme wrote:\r\n> To unsubscribe click here.\r\n")
    assert opt_out(message(body)) is None


@pytest.mark.parametrize("mail_from, extra, subject", [
    ("", "", "Re: Spring offers"),
    (SENDER, "Auto-Submitted: auto-replied\r\n", "Re: Spring offers"),
    (SENDER, "Precedence: bulk\r\n", "Re: Spring offers"),
    (SENDER, "", "Out of Office: Re: Spring offers"),
], ids=["null sender", "Auto-Submitted", "Precedence", "out-of-office subject"])
def test_auto_replies_and_bounces_never_opt_out(mail_from, extra, subject):
    raw = message("Unsubscribe requests are handled on my return.\r\n", subject=subject,
                  extra=extra)
    assert opt_out(raw, mail_from) is None


def test_a_delivery_report_never_opts_out():
    raw = message("--r\r\nContent-Type: text/plain\r\n\r\nunsubscribe\r\n--r--\r\n",
                  content_type="multipart/report; report-type=delivery-status; boundary=r")
    assert opt_out(raw) is None


def test_the_author_and_message_id_are_read():
    reply = read_reply(message("Thanks.\r\n"), SENDER)
    assert (reply.author, reply.message_id) == ("Jane <jane@example.com>", "<r1@example.com>")


def test_an_opt_out_beyond_the_read_limit_is_not_read():
    raw = message("\r\n" * (READ_LIMIT // 2) + "unsubscribe\r\n")
    assert opt_out(raw) is None


def test_an_opt_out_before_the_read_limit_is_found_in_a_message_cut_there():
    raw = message("--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                  + base64.encodebytes(b"<p>stop</p>" + b"<p>x</p>" * READ_LIMIT).decode(),
                  content_type="multipart/alternative; boundary=b")
    assert opt_out(raw) == "first line"


def lines(unit: bytes, size: int = 5_000_000) -> bytes:
    """`unit` repeated to about `size` bytes, in lines of at most 980."""
    line = unit * max(1, 980 // len(unit)) + b"\r\n"
    return line * (size // len(line))


HOSTILE_BODIES = {
    "unclosed script tags": b"<script" * 700_000,
    "unclosed scripts": b"<script>" * 600_000,
    "scripts never closed in lines": lines(b"<script>x"),
    "unclosed comments": b"<!--" * 1_200_000,
    "bare angle brackets": b"< " * 2_500_000,
    "tags without end": b"<a<b" * 1_200_000,
    "entities": b"&amp" * 1_200_000,
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_hostile_html_is_read_in_well_under_a_second(body):
    raw = message(b"<p>unsubscribe</p>" + body, content_type="text/html")
    started = time.perf_counter()
    found = opt_out(raw)
    assert time.perf_counter() - started < 0.5
    assert found == "first line"


HOSTILE_HEADERS = {
    "From with many addresses": "From: " + "a@b, " * 50_000,
    "From with nested comments": "From: " + "(" * 100_000,
    "Subject of encoded words": "Subject: " + "=?utf-8?q?a?= " * 20_000,
    "Content-Type with many parameters": "Content-Type: text/plain; " + "a=b; " * 50_000,
    "Message-ID of brackets": "Message-ID: " + "<" * 100_000,
    "a header folded many times": "Subject: x" + "\r\n a" * 60_000,
    "many headers": "X-A: b\r\n" * 30_000,
}


@pytest.mark.parametrize("header", HOSTILE_HEADERS.values(), ids=HOSTILE_HEADERS.keys())
def test_hostile_headers_are_read_in_well_under_a_second(header):
    raw = f"{header}\r\n\r\nunsubscribe\r\n".encode()
    started = time.perf_counter()
    read_reply(raw, SENDER)
    assert time.perf_counter() - started < 0.5


def test_deeply_nested_multiparts_are_read_in_well_under_a_second():
    nesting = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                       for i in range(20_000))
    started = time.perf_counter()
    read_reply(b"Subject: hi\r\n" + nesting + b"\r\nunsubscribe\r\n", SENDER)
    assert time.perf_counter() - started < 0.5


PIECES = [b"\r\n", b"\n", b"\r", b" ", b":", b";", b"=", b'"', b"<", b">", b"</", b"<!--",
          b"-->", b"script", b"style", b"&amp;", b"&#", b"--b", b"--", b"stop", b"\xc3",
          b"\xff", b"=?utf-8?q?", b"=?x?b?", b"?=", b"Subject: ", b"From: ", b"boundary=b",
          b"Content-Type: multipart/mixed; boundary=b", b"Content-Type: text/html",
          b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
          b"charset=punycode", b"charset=utf-16", b"Auto-Submitted: no"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.binary(max_size=8), max_size=80).map(b"".join))
def test_any_bytes_are_read_without_an_error(raw):
    reply = read_reply(raw, SENDER)
    assert reply.opt_out in (None, "subject", "first line")
