"""ARF complaint reports (RFC 5965) sent over SMTP to the gateway, on both ledger backends:
each built with Python's `email` package around a copy the gateway really delivered (or
one it never sent), the way a mailbox provider's feedback loop sends it."""

from __future__ import annotations

import asyncio
import smtplib
import sys
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from esphelpers import (
    assert_next_mail_is_blocked,
    deliver_marketing,
    events,
    opt_outs,
    running,
    send_marketing,
    status_html,
    status_json,
    token_of,
)

REPORTS_TO = "abuse+reports@unsub.gw.test"


@pytest.fixture
async def gw(tmp_path, sink, ledger_url):
    async with running(tmp_path, sink, ledger_url) as gateway:
        yield gateway


def arf_report(reported: Message | bytes, *, feedback_type: str = "abuse",
               headers_only: bool = False, subject: str = "FW: Spring offers") -> bytes:
    """A feedback report as RFC 5965 lays it out: a note for people, the machine-readable
    report, and the reported message (whole, or only its header)."""
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "Mail Feedback Loop <fbl@mailbox.example>"
    report["To"] = REPORTS_TO
    report["Subject"] = subject
    report["Message-ID"] = "<report-1@mailbox.example>"
    report.attach(MIMEText("This is an email abuse report for a message received from IP "
                           "192.0.2.1 on Wed, 2 Dec 2026 04:00:00 +0000.\n"))
    fields = MIMEBase("message", "feedback-report")
    fields.set_payload(f"Feedback-Type: {feedback_type}\r\nUser-Agent: MailboxFBL/2.1\r\n"
                       "Version: 1\r\nOriginal-Rcpt-To: <redacted@example.com>\r\n"
                       "Arrival-Date: Wed, 02 Dec 2026 04:00:00 +0000\r\n"
                       "Source-IP: 192.0.2.1\r\n")
    report.attach(fields)
    if headers_only:
        raw = reported if isinstance(reported, bytes) else reported.as_bytes()
        head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode()
        part = MIMEText(head, "rfc822-headers")
        report.attach(part)
    else:
        report.attach(MIMEMessage(reported))
    return report.as_bytes()


async def send_report(gw, data: bytes, to: str = REPORTS_TO) -> None:
    """From the outside world: no AUTH, as a feedback loop delivers."""
    port = gw.runtime.settings.smtp.listen.port

    def talk():
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.sendmail("fbl-bounces@mailbox.example", [to], data)

    await asyncio.to_thread(talk)


async def test_an_arf_report_about_a_delivered_copy_records_a_complaint_and_blocks_the_next_mail(
        gw, sink):
    copy = await deliver_marketing(gw, sink)

    await send_report(gw, arf_report(copy))

    [row] = opt_outs(gw)
    assert (row["method"], row["org"], row["channel"]) == ("complaint", "acme", "email")
    assert row["message_id"] == "<spring-1@acme.test>"
    [kept] = events(gw)
    assert (kept["provider"], kept["event_type"], kept["outcome"], kept["stream"]) == (
        "arf", "abuse", "recorded", "acme-news")
    assert kept["event_at"].startswith("2026-12-02T04:00:00")
    assert len(sink.messages) == 1, "a report is never relayed"
    await assert_next_mail_is_blocked(gw)


async def test_a_report_with_only_the_reported_header_and_its_reply_to_token_counts(gw, sink):
    copy = await deliver_marketing(gw, sink)
    del copy["List-Unsubscribe"]  # a provider that strips it: the Reply-To token remains

    await send_report(gw, arf_report(copy, headers_only=True))

    assert [r["method"] for r in opt_outs(gw)] == ["complaint"]


async def test_a_report_to_a_configured_report_address_is_read_too(gw, sink):
    copy = await deliver_marketing(gw, sink)

    await send_report(gw, arf_report(copy), to="fbl@acme.test")

    assert [r["method"] for r in opt_outs(gw)] == ["complaint"]


async def test_the_same_report_delivered_twice_records_one_opt_out(gw, sink):
    report = arf_report(await deliver_marketing(gw, sink))

    await send_report(gw, report)
    await send_report(gw, report)

    assert len(opt_outs(gw)) == 1 and len(events(gw)) == 1


async def test_an_arf_report_about_a_message_the_gateway_never_sent_is_kept_and_shown(gw):
    stranger = MIMEText("Buy now!")
    stranger["From"] = "spammer@elsewhere.example"
    stranger["Subject"] = "<script>alert(1)</script> cheap"
    stranger["Message-ID"] = "<never@elsewhere.example>"

    await send_report(gw, arf_report(stranger))

    assert opt_outs(gw) == []
    [kept] = events(gw)
    assert kept["outcome"] == "unresolved" and "no gateway token" in kept["problem"]
    [shown] = (await status_json(gw))["outside_opt_outs"]["unresolved"]
    assert shown["details"]["reported_subject"] == "<script>alert(1)</script> cheap"
    html = await status_html(gw)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; cheap" in html
    assert "<script>alert(1)</script>" not in html


async def test_a_report_whose_token_is_forged_records_nothing(gw, sink):
    copy = await deliver_marketing(gw, sink)
    token = token_of(copy)
    forged = ("b" if token[0] == "a" else "a") + token[1:]  # well formed, wrong signature

    await send_report(gw, arf_report(copy.as_bytes().replace(token.encode(), forged.encode()),
                                     headers_only=True))

    assert opt_outs(gw) == []
    [kept] = events(gw)
    assert kept["outcome"] == "unresolved" and "unknown or forged" in kept["problem"]


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure", "virus"])
async def test_a_report_that_is_no_complaint_records_nothing(gw, sink, feedback_type):
    await send_report(gw, arf_report(await deliver_marketing(gw, sink),
                                     feedback_type=feedback_type))

    assert opt_outs(gw) == []
    assert f"feedback type '{feedback_type}' is not a complaint" in events(gw)[0]["problem"]
    await send_marketing(gw)  # still allowed


async def test_plain_mail_to_the_report_address_is_kept_unread_and_records_nothing(gw):
    await send_report(gw, b"From: someone@example.org\r\nSubject: spam!\r\n\r\nstop it\r\n")

    assert opt_outs(gw) == [] and events(gw)[0]["event_type"] == "not-arf"
