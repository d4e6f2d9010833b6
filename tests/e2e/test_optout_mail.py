"""The email side of the opt-out loop, with addresses taken from copies really delivered."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import smtplib

import aiosmtplib
import pytest
from gwtest import SOFT_OPT_IN, make_settings, seed

from gateway import server

ORIGINAL = (b"From: Acme News <news@acme.test>\r\nTo: jane@example.com\r\n"
            b"Reply-To: Acme Team <team@acme.test>\r\nSubject: Spring offers\r\n"
            b"Message-ID: <spring-1@acme.test>\r\n\r\nOur hedge trimmers are on sale.\r\n")


@pytest.fixture
async def gw(tmp_path, sink):
    settings = make_settings(tmp_path, upstream=f"smtp://127.0.0.1:{sink.port}?tls=none")
    async with await server.start(settings) as running:
        seed(running.runtime, address="jane@example.com", **SOFT_OPT_IN)
        yield running


async def deliver_marketing(gw, sink) -> email.message.EmailMessage:
    port = gw.runtime.settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.login("acme-news", "news-pass")
        await client.sendmail("news@acme.test", ["jane@example.com"], ORIGINAL)
    before = len(sink.messages)
    messages = await sink.wait_for(before if before else 1)
    return email.message_from_bytes(messages[-1][2], policy=email.policy.default)


async def anonymous_send(gw, rcpt: str, data: bytes, sender: str = "jane@example.com"):
    """Mail from the outside world: no AUTH, like an MX delivery."""
    port = gw.runtime.settings.smtp.listen.port

    def talk():
        with smtplib.SMTP("127.0.0.1", port) as client:
            return client.sendmail(sender, [rcpt], data)

    return await asyncio.to_thread(talk)


def opt_outs(gw) -> list[dict]:
    return gw.runtime.ledger.opt_out_rows("jane@example.com")


async def test_delivered_copy_carries_list_unsubscribe_and_a_reply_address(gw, sink):
    copy = await deliver_marketing(gw, sink)
    https, mailto = re.findall(r"<([^>]+)>", copy["List-Unsubscribe"])
    assert https.startswith(gw.runtime.settings.http.public_url + "/u/")
    assert mailto.startswith("mailto:unsubscribe+") and mailto.endswith("@unsub.gw.test")
    assert copy["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(copy["Reply-To"]).startswith("reply+")
    local = mailto.removeprefix("mailto:").split("@")[0]
    assert len(local.encode()) <= 64
    assert https.split("/u/")[1] in copy.get_body(("plain",)).get_content()


async def test_mail_to_the_unsubscribe_address_without_auth_opts_out(gw, sink):
    copy = await deliver_marketing(gw, sink)
    mailto = re.findall(r"<mailto:([^>]+)>", copy["List-Unsubscribe"])[0]
    await anonymous_send(gw, mailto, b"Subject: unsubscribe\r\n\r\n")
    rows = opt_outs(gw)
    assert [(r["method"], r["channel"], r["message_id"]) for r in rows] == [
        ("mailto", "email", "<spring-1@acme.test>")]
    await asyncio.sleep(0.3)
    assert len(sink.messages) == 1, "the unsubscribe mail is not relayed"
    with pytest.raises(aiosmtplib.SMTPResponseException) as exc:
        await deliver_marketing(gw, sink)
    assert "opted_out" in exc.value.message


async def test_unknown_token_at_the_mailto_domain_is_refused_at_rcpt(gw):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
        await anonymous_send(gw, "unsubscribe+" + "a" * 32 + "@unsub.gw.test", b"x")
    assert exc.value.recipients["unsubscribe+" + "a" * 32 + "@unsub.gw.test"][0] == 550


async def test_unauthenticated_mail_to_any_other_domain_is_refused(gw):
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await anonymous_send(gw, "someone@elsewhere.test", b"Subject: hi\r\n\r\nx")


def reply(to: str, subject: str, body: str, extra: str = "") -> bytes:
    return (f"From: Jane <jane@example.com>\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()


QUOTED = ("Thanks, see you Saturday.\r\n\r\nOn Sun, 29 Nov 2026, Acme wrote:\r\n"
          "> Our hedge trimmers are on sale.\r\n> To unsubscribe click here.\r\n")


@pytest.mark.parametrize("subject, body, extra, opts_out", [
    ("Re: Spring offers - unsubscribe", "please\r\n", "", True),
    ("Re: Spring offers", "Please STOP sending me these.\r\n\r\n> old text\r\n", "", True),
    ("Re: Spring offers", QUOTED, "", False),
    ("Out of Office: Re: Spring offers", "I am away. Unsubscribe requests later.\r\n",
     "Auto-Submitted: auto-replied\r\n", False),
], ids=["unsubscribe in the subject", "stop on the first new line",
        "unsubscribe only in the quoted original", "out-of-office auto-reply"])
async def test_replies_are_read_for_opt_outs_and_always_relayed(gw, sink, subject, body, extra,
                                                               opts_out):
    copy = await deliver_marketing(gw, sink)
    reply_to = str(copy["Reply-To"])
    await anonymous_send(gw, reply_to, reply(reply_to, subject, body, extra))
    messages = await sink.wait_for(2)
    relayed = email.message_from_bytes(messages[1][2], policy=email.policy.default)
    assert messages[1][1] == ["team@acme.test"]
    assert str(relayed["Subject"]) == subject
    methods = [r["method"] for r in opt_outs(gw)]
    assert methods == (["reply"] if opts_out else [])


async def test_reply_handling_off_leaves_reply_to_alone(tmp_path, sink):
    settings = make_settings(tmp_path, reply_handling="off",
                             upstream=f"smtp://127.0.0.1:{sink.port}?tls=none")
    async with await server.start(settings) as gw:
        seed(gw.runtime, address="jane@example.com", **SOFT_OPT_IN)
        copy = await deliver_marketing(gw, sink)
        assert str(copy["Reply-To"]) == "Acme Team <team@acme.test>"


async def test_a_second_mail_to_the_unsubscribe_address_records_nothing_new(gw, sink):
    copy = await deliver_marketing(gw, sink)
    mailto = re.findall(r"<mailto:([^>]+)>", copy["List-Unsubscribe"])[0]
    await anonymous_send(gw, mailto, b"Subject: unsubscribe\r\n\r\n")
    await anonymous_send(gw, mailto, b"Subject: unsubscribe again\r\n\r\n")
    assert [r["method"] for r in opt_outs(gw)] == ["mailto"]
