"""CopyClient.send_copy sends what aiosmtplib's sendmail sends, without its per-message
parsing: the same bytes (checked against aiosmtplib's own functions), the same envelope and
SIZE at a real aiosmtpd server, the same errors for the same refusals."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mail.smtp_client import CopyClient, crlf_form, dot_stuffed
from tests.gwtest import free_port

PIECES = [b"a", b".", b"..", b" ", b"\r", b"\n", b"\r\n", b"\xe9", b"=", b"From ", b"x" * 90]
messages = st.binary(max_size=2000) | st.lists(st.sampled_from(PIECES), max_size=120).map(
    b"".join)


@settings(max_examples=600, deadline=None)
@given(messages)
def test_the_bytes_on_the_wire_are_those_aiosmtplib_would_send(data: bytes) -> None:
    normalised = normalize_message_line_endings(data)
    assert crlf_form(data) == normalised
    assert dot_stuffed(crlf_form(data)) == PERIOD_REGEX.sub(b"..", normalised) + b".\r\n"


class Recorder:
    """An upstream that records each transaction as it arrived, refusing on request."""

    def __init__(self) -> None:
        self.got: list[tuple[str, list[str], list[str], bytes]] = []
        self.refuse: dict[str, str] = {}  # "MAIL" | "RCPT" | "DATA" -> reply
        self.commands: list[str] = []

    async def handle_MAIL(self, server, session, envelope, address, options):
        self.commands.append("MAIL")
        if "MAIL" in self.refuse:
            return self.refuse.pop("MAIL")
        envelope.mail_from, envelope.mail_options = address, list(options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        self.commands.append("RCPT")
        if "RCPT" in self.refuse:
            return self.refuse.pop("RCPT")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if "DATA" in self.refuse:
            return self.refuse.pop("DATA")
        self.got.append((envelope.mail_from, list(envelope.rcpt_tos),
                         list(envelope.mail_options), envelope.original_content))
        return "250 2.0.0 queued as 42"

    async def handle_RSET(self, server, session, envelope):
        self.commands.append("RSET")
        return "250 OK"


@pytest.fixture
async def upstream():
    recorder = Recorder()
    port = free_port()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(recorder, decode_data=False, enable_SMTPUTF8=True, hostname="up"),
        "127.0.0.1", port)
    yield recorder, port
    server.close()
    await server.wait_closed()


async def connected(port: int, cls=CopyClient) -> aiosmtplib.SMTP:
    client = cls(hostname="127.0.0.1", port=port, start_tls=False, timeout=5)
    await client.connect()
    return client


SAMPLES = [
    b"Subject: hi\r\n\r\nplain\r\n",
    b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend",
    b".first line starts with a dot\r\n\r\nbody\r\n",
    b"Subject: lone LF\n\nbody\nmore\rlone CR\r\n",
    b"Subject: 8bit\r\n\r\ncaf\xc3\xa9\r\n" + b"y" * 900 + b"\r\n" * 3,
]


async def test_a_copy_arrives_as_sendmail_delivers_it_envelope_size_and_bytes(upstream):
    recorder, port = upstream
    ours, theirs = await connected(port), await connected(port, aiosmtplib.SMTP)
    for data in SAMPLES:
        reply = await ours.send_copy("bounce@shop.example", "ann@example.net", data)
        assert "queued as 42" in reply
        await theirs.sendmail("bounce@shop.example", ["ann@example.net"], data)
    await ours.quit()
    await theirs.quit()
    assert len(recorder.got) == 2 * len(SAMPLES)
    for k in range(len(SAMPLES)):
        assert recorder.got[2 * k] == recorder.got[2 * k + 1]
    assert recorder.got[0][2] == [f"SIZE={len(SAMPLES[0])}"]


async def test_a_non_ascii_address_is_sent_with_smtputf8(upstream):
    recorder, port = upstream
    client = await connected(port)
    await client.send_copy("bounce@shop.example", "zoë@exämple.net", b"Subject: x\r\n\r\nx\r\n")
    await client.quit()
    sender, rcpts, options, _ = recorder.got[0]
    assert rcpts == ["zoë@exämple.net"] and "SMTPUTF8" in options


@pytest.mark.parametrize(("command", "reply", "error"), [
    ("MAIL", "550 5.7.1 sender refused", aiosmtplib.SMTPSenderRefused),
    ("RCPT", "450 4.2.0 mailbox busy", aiosmtplib.SMTPRecipientsRefused),
    ("DATA", "554 5.6.0 content refused", aiosmtplib.SMTPDataError),
])
async def test_a_refusal_raises_what_sendmail_raises_and_the_connection_goes_on(
        upstream, command, reply, error):
    recorder, port = upstream
    client = await connected(port)
    recorder.refuse[command] = reply
    with pytest.raises(error) as raised:
        await client.send_copy("bounce@shop.example", "ann@example.net", b"Subject: x\r\n\r\nx\r\n")
    refusal = raised.value.recipients[0] if command == "RCPT" else raised.value
    assert refusal.code == int(reply[:3])
    assert "RSET" in recorder.commands
    await client.send_copy("bounce@shop.example", "ann@example.net", b"Subject: y\r\n\r\ny\r\n")
    await client.quit()
    assert [g[3] for g in recorder.got] == [b"Subject: y\r\n\r\ny\r\n"]


async def test_an_upstream_that_never_answers_the_data_times_out_and_is_dropped():
    port = free_port()

    async def silent(reader, writer):  # a server that stops answering after DATA
        writer.write(b"220 up ESMTP\r\n")
        while line := await reader.readline():
            if line.upper().startswith((b"EHLO", b"HELO")):
                writer.write(b"250 up\r\n")
            elif line.upper().startswith(b"DATA"):
                writer.write(b"354 go ahead\r\n")
            elif line.upper().startswith((b"MAIL", b"RCPT")):
                writer.write(b"250 OK\r\n")
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", port)
    try:
        client = CopyClient(hostname="127.0.0.1", port=port, start_tls=False, timeout=0.5)
        await client.connect()
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await client.send_copy("a@shop.example", "b@example.net", b"Subject: x\r\n\r\nx\r\n")
        assert not client.is_connected
    finally:
        server.close()
        await server.wait_closed()
