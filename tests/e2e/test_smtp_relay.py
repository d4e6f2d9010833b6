"""The email relay end to end: smtplib/aiosmtplib -> gateway -> a real aiosmtpd sink."""

from __future__ import annotations

import asyncio
import email
import email.policy
import smtplib
import ssl

import aiosmtplib
import pytest
from gwtest import SOFT_OPT_IN, make_settings, seed

from gateway import server

PLAIN = (b"From: Acme News <news@acme.test>\r\nTo: {to}\r\nSubject: Spring offers\r\n"
         b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n{extra}\r\nHello gardener,\r\n"
         b"our hedge trimmers are on sale.\r\n")


def message(to: str = "jane@example.com", extra: bytes = b"") -> bytes:
    return PLAIN.replace(b"{to}", to.encode()).replace(b"{extra}", extra)


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


@pytest.fixture
async def gw(tmp_path, sink):
    settings = make_settings(tmp_path, upstream=f"smtp://127.0.0.1:{sink.port}?tls=none")
    running = await server.start(settings)
    yield running
    await running.stop()


async def send(gw, rcpts, data, user="acme-news", password="news-pass", sender="news@acme.test"):
    port = gw.runtime.settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.login(user, password)
        return await client.sendmail(sender, rcpts, data)


# One address per reason code, with the evidence that produces it.
REASON_CASES = {
    "soft_opt_in": dict(**SOFT_OPT_IN),
    "consent": dict(basis="consent", source="newsletter form v3"),
    "corporate_subscriber": dict(basis="corporate_subscriber", source="sales team"),
    "third_party_unnamed": dict(basis="consent", collected_by="third_party",
                                named_orgs=["selected partners"]),
    "soft_opt_in_not_similar": dict(SOFT_OPT_IN, categories=["car-insurance"]),
    "soft_opt_in_third_party": dict(SOFT_OPT_IN, collected_by="third_party"),
    "soft_opt_in_no_sale": dict(SOFT_OPT_IN, context="enquiry"),
    "soft_opt_in_no_opt_out_offered": dict(SOFT_OPT_IN, opt_out_offered=False),
    "no_consent": None,
}
ALLOWED = {"soft_opt_in", "consent", "corporate_subscriber"}


@pytest.mark.parametrize("reason", sorted(REASON_CASES))
async def test_each_reason_code_reaches_the_smtp_client(gw, sink, reason):
    address = f"{reason.replace('_', '-')}@example.com"
    if REASON_CASES[reason]:
        seed(gw.runtime, address=address, **REASON_CASES[reason])
    if reason in ALLOWED:
        await send(gw, [address], message(address))
        (mail_from, rcpts, data), = await sink.wait_for(1)
        assert rcpts == [address]
        assert parse(data)["List-Unsubscribe"]
    else:
        with pytest.raises(aiosmtplib.SMTPResponseException) as exc:
            await send(gw, [address], message(address))
        assert exc.value.code == 550 and reason in exc.value.message
    rows = gw.runtime.ledger.decisions_for(address)
    assert rows[0]["reason"] == reason and rows[0]["message_id"]


async def test_opted_out_and_service_reasons_through_smtp(gw, sink):
    seed(gw.runtime, address="out@example.com", **SOFT_OPT_IN)
    gw.runtime.ledger.record_opt_out("acme", "email", "out@example.com", method="test")
    with pytest.raises(aiosmtplib.SMTPResponseException) as exc:
        await send(gw, ["out@example.com"], message("out@example.com"))
    assert "opted_out" in exc.value.message
    await send(gw, ["out@example.com"], message("out@example.com", b"X-Gateway-Purpose: service\r\n"))
    (_, _, data), = await sink.wait_for(1)
    delivered = parse(data)
    assert "X-Gateway-Purpose" not in delivered and "List-Unsubscribe" not in delivered
    assert gw.runtime.ledger.decisions_for("out@example.com")[0]["reason"] == "service_message"


async def test_expired_reasons_through_smtp(tmp_path, sink):
    toml_extra = dict(upstream=f"smtp://127.0.0.1:{sink.port}?tls=none")
    settings = make_settings(tmp_path, **toml_extra)
    import dataclasses
    org = dataclasses.replace(settings.orgs["acme"], soft_opt_in_max_age_days=30,
                              indirect_consent_max_age_days=30)
    settings = dataclasses.replace(settings, orgs={**settings.orgs, "acme": org})
    async with await server.start(settings) as gw:
        seed(gw.runtime, address="old-sale@example.com", **SOFT_OPT_IN)
        seed(gw.runtime, address="old-list@example.com", basis="consent",
             collected_by="third_party", named_orgs=["Acme Garden Ltd"])
        for address, reason in (("old-sale@example.com", "soft_opt_in_expired"),
                                ("old-list@example.com", "consent_expired")):
            with pytest.raises(aiosmtplib.SMTPResponseException) as exc:
                await send(gw, [address], message(address))
            assert reason in exc.value.message


async def test_campaigning_nature_header_blocks_soft_opt_in(gw, sink):
    seed(gw.runtime, address="jane@example.com", **SOFT_OPT_IN)
    with pytest.raises(aiosmtplib.SMTPResponseException) as exc:
        await send(gw, ["jane@example.com"],
                   message(extra=b"X-Gateway-Nature: campaigning\r\n"))
    assert "soft_opt_in_not_commercial" in exc.value.message


async def test_fixed_stream_refuses_a_blocked_recipient_at_rcpt(gw, sink):
    port = gw.runtime.settings.smtp.listen.port

    def talk():
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.login("acme-fixed", "fixed-pass")
            client.mail("news@acme.test")
            return client.rcpt("nobody@example.com")

    code, text = await asyncio.to_thread(talk)
    assert code == 550 and b"no_consent" in text


async def test_several_recipients_get_personal_copies_and_the_sender_a_dsn(gw, sink):
    for who in ("ann", "bob"):
        seed(gw.runtime, address=f"{who}@example.com", **SOFT_OPT_IN)
    refused = await send(gw, ["ann@example.com", "bob@example.com", "cat@example.com"],
                         message("ann@example.com, bob@example.com, cat@example.com"))
    messages = await sink.wait_for(3)
    copies = {m[1][0]: parse(m[2]) for m in messages if m[0]}
    dsns = [parse(m[2]) for m in messages if not m[0]]
    assert set(copies) == {"ann@example.com", "bob@example.com"}
    links = {c["List-Unsubscribe"] for c in copies.values()}
    assert len(links) == 2, "each copy carries its own token"
    assert copies["ann@example.com"]["Message-ID"] == copies["bob@example.com"]["Message-ID"]
    dsn, = dsns
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert "cat@example.com" in dsn.as_string() and "no_consent" in dsn.as_string()
    assert refused[0] == {}


async def test_unauthenticated_client_cannot_relay(gw):
    port = gw.runtime.settings.smtp.listen.port
    probes = ["victim@elsewhere.test", "victim%elsewhere.test@unsub.gw.test",
              "@relay.test:victim@elsewhere.test", '"victim@elsewhere.test"@unsub.gw.test',
              "victim@elsewhere.test@unsub.gw.test", "unsubscribe@unsub.gw.test"]

    def talk():
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.ehlo("probe.test")
            client.mail("spammer@evil.test")
            return {rcpt: client.rcpt(rcpt)[0] for rcpt in probes}

    codes = await asyncio.to_thread(talk)
    assert all(code >= 500 for code in codes.values()), codes


async def test_bad_credentials_are_refused(gw):
    port = gw.runtime.settings.smtp.listen.port

    def attempt(user, password):
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.login(user, password)

    for user, password in (("acme-news", "wrong"), ("nobody", "news-pass")):
        with pytest.raises(smtplib.SMTPAuthenticationError):
            await asyncio.to_thread(attempt, user, password)


async def test_oversized_message_is_refused_with_552(gw):
    big = message() + b"x" * (gw.runtime.settings.smtp.max_message_size + 10)
    with pytest.raises(aiosmtplib.SMTPResponseException) as exc:
        await send(gw, ["jane@example.com"], big)
    assert exc.value.code == 552


async def test_too_many_recipients_are_refused_with_452(tmp_path, sink):
    settings = make_settings(tmp_path, smtp_extra="max_recipients = 3")
    async with await server.start(settings) as gw:
        port = gw.runtime.settings.smtp.listen.port

        def talk():
            with smtplib.SMTP("127.0.0.1", port) as client:
                client.login("acme-news", "news-pass")
                client.mail("news@acme.test")
                return [client.rcpt(f"r{i}@example.com")[0] for i in range(5)]

        codes = await asyncio.to_thread(talk)
    assert codes == [250, 250, 250, 452, 452]


async def test_bare_lf_dot_does_not_smuggle_a_second_message(gw, sink):
    seed(gw.runtime, address="jane@example.com", **SOFT_OPT_IN)
    seed(gw.runtime, address="victim@example.com", **SOFT_OPT_IN)
    port = gw.runtime.settings.smtp.listen.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def cmd(line: bytes) -> bytes:
        writer.write(line)
        await writer.drain()
        return await reader.readline()

    await reader.readline()
    writer.write(b"EHLO smuggler\r\n")
    while not (await reader.readline()).startswith(b"250 "):
        pass
    import base64
    assert (await cmd(b"AUTH PLAIN " + base64.b64encode(b"\0acme-news\0news-pass")
                      + b"\r\n")).startswith(b"235")
    assert (await cmd(b"MAIL FROM:<news@acme.test>\r\n")).startswith(b"250")
    assert (await cmd(b"RCPT TO:<jane@example.com>\r\n")).startswith(b"250")
    assert (await cmd(b"DATA\r\n")).startswith(b"354")
    payload = (b"Subject: one\r\n\r\nbody\n.\r\nMAIL FROM:<news@acme.test>\r\n"
               b"RCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n")
    reply = await cmd(payload)
    assert reply.startswith(b"250")
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()
    messages = await sink.wait_for(1)
    await asyncio.sleep(0.5)
    assert len(sink.messages) == 1
    assert [m[1] for m in messages] == [["jane@example.com"]]


async def test_upstream_down_queues_then_delivers_when_it_returns(gw, sink):
    seed(gw.runtime, address="jane@example.com", **SOFT_OPT_IN)
    await sink.stop()
    await send(gw, ["jane@example.com"], message())
    await asyncio.sleep(1.5)
    assert gw.runtime.spool.stats()["depth"] == 1
    await sink.start()
    (_, rcpts, _), = await sink.wait_for(1, timeout=15)
    assert rcpts == ["jane@example.com"]


async def test_permanent_upstream_failure_bounces_to_the_sender(gw, sink):
    seed(gw.runtime, address="jane@example.com", **SOFT_OPT_IN)
    sink.replies = ["554 5.7.1 rejected by upstream policy"]
    await send(gw, ["jane@example.com"], message())
    (mail_from, rcpts, data), = await sink.wait_for(1)
    assert mail_from == "" and rcpts == ["news@acme.test"]
    assert "554 5.7.1 rejected by upstream policy" in parse(data).as_string()


async def test_monitor_mode_delivers_what_enforce_would_block(tmp_path, sink):
    settings = make_settings(tmp_path, mode="monitor",
                             upstream=f"smtp://127.0.0.1:{sink.port}?tls=none")
    async with await server.start(settings) as gw:
        await send(gw, ["nobody@example.com"], message("nobody@example.com"))
        (_, _, data), = await sink.wait_for(1)
        assert parse(data)["List-Unsubscribe"], "monitor mode still inserts the opt-out"
        row = gw.runtime.ledger.decisions_for("nobody@example.com")[0]
        assert (row["outcome"], row["reason"]) == ("would_block", "no_consent")



async def test_starttls_with_a_self_signed_certificate(tmp_path, sink, self_signed):
    cert, key = self_signed
    settings = make_settings(tmp_path, smtp_extra=f'tls_cert = "{cert}"\ntls_key = "{key}"',
                             upstream=f"smtp://127.0.0.1:{sink.port}?tls=none")
    seed_address = "jane@example.com"
    async with await server.start(settings) as gw:
        seed(gw.runtime, address=seed_address, **SOFT_OPT_IN)
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        port = settings.smtp.listen.port

        def talk():
            with smtplib.SMTP("127.0.0.1", port) as client:
                client.ehlo()
                assert client.has_extn("starttls")
                client.starttls(context=ctx)
                client.ehlo()
                client.login("acme-news", "news-pass")
                client.sendmail("news@acme.test", [seed_address], message())

        await asyncio.to_thread(talk)
        await sink.wait_for(1)


async def test_a_mailer_reusing_one_connection_is_never_cut_off(gw, sink):
    port = gw.runtime.settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.login("acme-service", "service-pass")
        for i in range(300):
            await client.sendmail("news@acme.test", [f"r{i}@example.com"],
                                  message(f"r{i}@example.com"))
            if i % 50 == 0:
                await client.rset()
    await sink.wait_for(300, timeout=30)
