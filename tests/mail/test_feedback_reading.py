"""Reading a mail to a report address: whatever arrives (anyone can send one), the answer
is an event (a complaint with its token, or one kept for the operator with the reason),
never an exception."""

from __future__ import annotations

import pytest

from gateway.mail.feedback import find_token, read_report

URL, DOMAIN = "https://gw.example", "unsub.gw.test"
TOKEN = "abcdefghijklmnopqrstuvwxyz234567"


def report(returned: str, feedback_type: str = "abuse") -> bytes:
    return ("From: fbl@mailbox.example\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n"
            "--b\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
            f"--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: {feedback_type}"
            "\r\nVersion: 1\r\n\r\n"
            f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\n{returned}\r\n--b--\r\n").encode()


@pytest.mark.parametrize("returned", [
    f"List-Unsubscribe: <{URL}/u/{TOKEN}>",
    f"List-Unsubscribe: <mailto:UNSUBSCRIBE+{TOKEN.upper()}@{DOMAIN}>",
    f"Reply-To: Acme <reply+{TOKEN}@{DOMAIN}>",
], ids=["https link", "mailto, upper case", "reply-to"])
def test_the_token_is_found_in_each_place_the_gateway_puts_it(returned):
    event = read_report(report(returned), URL, DOMAIN)
    assert (event.token, event.method, event.problem) == (TOKEN, "complaint", "")


@pytest.mark.parametrize("returned", [
    f"List-Unsubscribe: <https://elsewhere.example/u/{TOKEN}>",
    f"Reply-To: reply+{TOKEN}@other.example",
    f"List-Unsubscribe: <{URL}/u/{TOKEN}x>",
], ids=["another site", "another domain", "a longer string"])
def test_a_token_anywhere_else_is_not_taken(returned):
    assert read_report(report(returned), URL, DOMAIN).token is None


@pytest.mark.parametrize("raw", [
    b"", b"\xff\xfe\x00garbage", b"Content-Type: multipart/report; boundary=\r\n\r\n--\r\n",
    b"Content-Type: multipart/report; report-type=feedback-report; boundary=a\r\n\r\n"
    + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 500,
    b"Subject: =?utf-8?q?" + b"=ff" * 5000 + b"?=\r\n\r\nx",
], ids=["empty", "binary", "broken multipart", "deeply nested", "huge encoded word"])
def test_hostile_mail_to_the_report_address_is_kept_and_never_raises(raw):
    event = read_report(raw, URL, DOMAIN)
    assert event.token is None and event.problem


def test_find_token_without_a_returned_message_is_none():
    assert find_token(None, URL, DOMAIN) is None
