"""Hostile SMTP clients: smuggling, pipelining floods, 10,000 recipients, NUL bytes,
oversized lines, control characters in the sender, injection through the org name, and
the classic open-relay probes. The gateway never crashes, never relays for strangers,
and never passes anything on that a lenient upstream could read as a second message."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import aiosmtplib
import pytest
from gwtest import SOFT_OPT_IN, free_port, make_settings, seed

from gateway import server
from gateway.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

AUTH = b"EHLO hostile\r\nAUTH PLAIN " + base64.b64encode(b"\0acme-news\0news-pass") + b"\r\n"


@dataclass
class WireUpstream:
    """An upstream that keeps each DATA transfer exactly as it came over the wire."""

    port: int
    transfers: list[bytes] = field(default_factory=list)
    rcpts: list[str] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.session, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def session(self, reader, writer) -> None:
        writer.write(b"220 wire\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-wire\r\n250 8BITMIME\r\n")
                elif verb == b"RCPT":
                    self.rcpts.append(line[8:].strip().decode().strip("<>"))
                    writer.write(b"250 OK\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    await writer.drain()
                    self.transfers.append(await reader.readuntil(b"\r\n.\r\n"))
                    writer.write(b"250 OK\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    return
                else:
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def wait_for(self, count: int, timeout: float = 10) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(self.transfers) < count:
            assert loop.time() < end, f"upstream got {len(self.transfers)} of {count}"
            await asyncio.sleep(0.05)


@pytest.fixture
async def wire():
    u = WireUpstream(free_port())
    await u.start()
    yield u
    await u.stop()


@pytest.fixture
async def gw(tmp_path, wire):
    settings = make_settings(tmp_path, upstream=f"smtp://127.0.0.1:{wire.port}?tls=none")
    running = await server.start(settings)
    for address in ("jane@example.com", "victim@example.com"):
        seed(running.runtime, address=address, **SOFT_OPT_IN)
    yield running
    await running.stop()


def port_of(gw) -> int:
    return gw.runtime.settings.smtp.listen.port


async def converse(port: int, payload: bytes, read_for: float = 1.5) -> list[str]:
    """Send `payload` in one write; the reply lines until the server closes or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    out = b""
    loop = asyncio.get_running_loop()
    end = loop.time() + read_for
    try:
        while loop.time() < end:
            chunk = await asyncio.wait_for(reader.read(65536), max(0.01, end - loop.time()))
            if not chunk:
                break
            out += chunk
            if out.endswith(b"221 Bye\r\n"):
                break
    except (TimeoutError, ConnectionResetError):
        pass
    finally:
        writer.close()
    return out.decode("utf-8", "replace").split("\r\n")[:-1]


async def can_send(gw, rcpt: str = "jane@example.com", subject: str = "ok") -> bool:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port_of(gw), start_tls=False,
                               timeout=10) as client:
        await client.login("acme-news", "news-pass")
        data = f"From: n@acme.test\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nhi\r\n".encode()
        _, reply = await client.sendmail("n@acme.test", [rcpt], data)
    return reply.startswith("2.0.0 OK")


def bare_line_breaks(data: bytes) -> list[bytes]:
    """Bare CR or LF in a transfer: what a lenient upstream might read as a line end."""
    return re.findall(rb".{0,10}(?:\r(?!\n)|(?<!\r)\n).{0,10}", data, re.S)


@pytest.mark.parametrize("end", [b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\n.\n", b"\r\n.\r"],
                         ids=["LF.CRLF", "CR.CRLF", "CRLF.LF", "LF.LF", "CRLF.CR"])
async def test_a_fake_end_of_data_smuggles_nothing_in_or_out(gw, wire, end):
    payload = (AUTH + b"MAIL FROM:<news@acme.test>\r\nRCPT TO:<jane@example.com>\r\n"
               b"DATA\r\nSubject: one\r\n\r\nbody" + end + b"MAIL FROM:<news@acme.test>\r\n"
               b"RCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n"
               b".\r\nQUIT\r\n")
    replies = await converse(port_of(gw), payload)
    assert sum(r.startswith("250 2.0.0") for r in replies) == 1, replies
    await wire.wait_for(1)
    await asyncio.sleep(0.5)
    assert wire.rcpts == ["jane@example.com"]
    # What goes upstream has every line ending normalised: nothing for a lenient
    # upstream to mistake for the end of the data.
    (transfer,) = wire.transfers
    assert bare_line_breaks(transfer) == []
    assert transfer.count(b"\r\n.\r\n") == 1


async def test_pipelined_transactions_each_get_their_reply(gw, wire):
    one = (b"MAIL FROM:<news@acme.test>\r\nRCPT TO:<jane@example.com>\r\nDATA\r\n"
           b"Subject: p\r\n\r\nhi\r\n.\r\n")
    replies = await converse(port_of(gw), AUTH + one * 3 + b"QUIT\r\n")
    assert [r[:3] for r in replies if not r.startswith("250-")][-13:] == [
        "250", "250", "354", "250"] * 3 + ["221"]
    await wire.wait_for(3)


async def test_a_flood_of_commands_is_cut_off_and_the_gateway_stays_responsive(gw, wire):
    flood = asyncio.create_task(converse(port_of(gw), b"EHLO x\r\n" + b"NOOP\r\n" * 5000,
                                         read_for=5))
    assert await can_send(gw)
    replies = await flood
    assert any(r.startswith("421") for r in replies), replies[-3:]


async def rcpt_flood(port: int, count: int) -> Counter:
    """AUTH, MAIL, then `count` RCPTs in pipelined batches; the code of every reply,
    until all are answered or the server hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    codes: Counter = Counter()
    answered = 0

    async def replies_until(total: int) -> None:
        nonlocal answered
        while answered < total:
            line = await asyncio.wait_for(reader.readline(), 10)
            if not line:
                raise ConnectionResetError
            if line[3:4] == b" ":  # the last line of a reply
                codes[line[:3].decode()] += 1
                answered += 1

    try:
        writer.write(AUTH + b"MAIL FROM:<news@acme.test>\r\n")
        expected = 4  # greeting, EHLO, AUTH, MAIL
        for first in range(0, count, 500):
            batch = range(first, min(count, first + 500))
            writer.write(b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i for i in batch))
            await writer.drain()
            expected += len(batch)
            await replies_until(expected)
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        writer.close()
    return codes


async def test_ten_thousand_recipients_get_452_after_the_cap_and_the_gateway_stays_up(
        gw, wire):
    started = time.monotonic()
    attack = asyncio.create_task(rcpt_flood(port_of(gw), 10_000))
    assert await can_send(gw)
    codes = await attack
    cap = gw.runtime.settings.smtp.max_recipients
    assert codes["250"] - 2 == cap, codes  # EHLO and MAIL answer 250 too
    # every recipient past the cap gets 452 (or the connection is cut with 421)
    assert codes["452"] == 10_000 - cap or codes["421"] == 1, codes
    assert time.monotonic() - started < 10
    assert await can_send(gw)


async def test_nul_bytes_are_refused_in_addresses_and_do_not_crash_data(gw, wire):
    replies = await converse(port_of(gw), AUTH + b"MAIL FROM:<news\0@acme.test>\r\n"
                             b"MAIL FROM:<news@acme.test>\r\nRCPT TO:<jane\0@example.com>\r\n"
                             b"RCPT TO:<jane@example.com>\r\nDATA\r\n"
                             b"Subject: n\0ul\r\nX-\0: b\r\n\r\nbo\0dy\r\n.\r\nQUIT\r\n")
    tail = replies[next(i for i, r in enumerate(replies) if r.startswith("235")) + 1:]
    assert [r[:3] for r in tail] == ["553", "250", "553", "250", "354", "250", "221"], tail
    await wire.wait_for(1)


@pytest.mark.parametrize("sender", [b'"a\rBcc: evil@x.test"@acme.test', b"a\x0bb@acme.test",
                                    b"\x7f@acme.test"])
async def test_a_sender_with_control_characters_is_refused(gw, sender):
    replies = await converse(port_of(gw), AUTH + b"MAIL FROM:<" + sender + b">\r\nQUIT\r\n")
    assert any(r.startswith("553 5.1.7") for r in replies), replies


async def test_lines_over_64_kib_get_a_clear_error_and_the_session_goes_on(gw, wire):
    long_data = (AUTH + b"MAIL FROM:<news@acme.test>\r\nRCPT TO:<jane@example.com>\r\n"
                 b"DATA\r\nSubject: long\r\n\r\n" + b"x" * 70_000 + b"\r\n.\r\nQUIT\r\n")
    replies = await converse(port_of(gw), long_data)
    assert any(r.startswith("500 Line too long") for r in replies), replies[-3:]
    replies = await converse(port_of(gw), AUTH + b"MAIL FROM:<" + b"a" * 70_000 +
                             b"@acme.test>\r\nQUIT\r\n")
    assert any(r.startswith("500 Command line too long") for r in replies), replies[-3:]
    assert await can_send(gw)
    await wire.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(wire.transfers) == 1


async def test_a_header_longer_than_smtp_allows_is_delivered_or_bounced_never_lost(gw, wire):
    """Long lines are accepted (docs/decisions.md); if the upstream refuses one, the
    sender's bounce must itself be deliverable (its copy of the headers is re-encoded)."""
    replies = await converse(port_of(gw), AUTH + b"MAIL FROM:<news@acme.test>\r\n"
                             b"RCPT TO:<jane@example.com>\r\nDATA\r\nSubject: " + b"h" * 60_000 +
                             b"\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert any(r.startswith("250 2.0.0") for r in replies)
    await wire.wait_for(1)
    (transfer,) = wire.transfers
    assert b"h" * 60_000 in transfer  # the lenient wire upstream took it as it was


async def test_a_dsn_for_a_message_with_an_overlong_header_has_no_overlong_line():
    from gateway.mail.dsn import Failure, build_dsn

    original = b"Subject: " + b"h" * 5000 + b"\r\nFrom: a@b.test\r\n\r\nbody\r\n"
    dsn = build_dsn(hostname="gw.test", to="a@b.test", original=original,
                    failures=[Failure("x@y.test", "5.0.0", "smtp; 500 Line too long")])
    assert max(len(line) for line in dsn.split(b"\r\n")) <= 998
    report = email.message_from_bytes(dsn, policy=email.policy.default)
    headers = [p for p in report.walk() if p.get_content_type() == "text/rfc822-headers"]
    assert b"h" * 5000 in headers[0].get_payload(decode=True)


def test_an_org_name_with_line_breaks_is_refused_by_the_config(tmp_path):
    with pytest.raises(ConfigError) as exc:
        make_settings(tmp_path, org_name=r"Acme\r\nBcc: victim@evil.test")
    assert "org[0].name" in str(exc.value)


async def test_an_org_name_with_header_and_mime_syntax_adds_no_header_or_part(tmp_path, wire):
    name = "Acme Bcc: victim@evil.test --b1 Content-Type: text/html <script>x</script>"
    settings = make_settings(tmp_path, org_name=name,
                             upstream=f"smtp://127.0.0.1:{wire.port}?tls=none")
    async with await server.start(settings) as gw:
        seed(gw.runtime, address="jane@example.com", **SOFT_OPT_IN)
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port_of(gw),
                                   start_tls=False) as client:
            await client.login("acme-news", "news-pass")
            await client.sendmail("n@acme.test", ["jane@example.com"], (
                b"From: n@acme.test\r\nTo: jane@example.com\r\nSubject: multi\r\n"
                b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b1\r\n\r\n"
                b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\n"
                b"Content-Type: text/html\r\n\r\n<html><body>hi</body></html>\r\n--b1--\r\n"))
        await wire.wait_for(1)
    msg = email.message_from_bytes(wire.transfers[0], policy=email.policy.default)
    assert "Bcc" not in msg and len(msg.get_all("List-Unsubscribe")) == 1
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/alternative", "text/plain", "text/html"]
    html = msg.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html


# -- never an open relay --------------------------------------------------------------------

RELAY_PROBES = {
    "external-to-external": "victim@other.test",
    "percent-hack": "victim%other.test@unsub.gw.test",
    "percent-hack-local": "victim%other.test@example.com",
    "source-route": "@unsub.gw.test:victim@other.test",
    "source-route-via-us": "@other.test:unsubscribe+x@unsub.gw.test",
    "quoted-local-part": '"victim@other.test"@unsub.gw.test',
    "quoted-token-lookalike": '"unsubscribe+x@other.test"@unsub.gw.test',
    "bang-path": "other.test!victim@unsub.gw.test",
    "bang-path-bare": "other.test!victim",
    "double-at": "victim@other.test@unsub.gw.test",
    "mailto-non-token": "postmaster@unsub.gw.test",
    "mailto-empty-token": "unsubscribe+@unsub.gw.test",
    "mailto-forged-token": "unsubscribe+" + "a" * 32 + "@unsub.gw.test",
    "mailto-reply-forged": "reply+" + "b" * 32 + "@unsub.gw.test",
    "mailto-upper-case": "VICTIM@UNSUB.GW.TEST",
    "trailing-dot": "victim@other.test.",
    "ip-literal": "victim@[127.0.0.1]",
}


@pytest.mark.parametrize("rcpt", list(RELAY_PROBES.values()), ids=list(RELAY_PROBES))
async def test_an_unauthenticated_client_cannot_relay(gw, wire, rcpt):
    replies = await converse(port_of(gw), b"EHLO probe\r\nMAIL FROM:<spammer@other.test>\r\n"
                             b"RCPT TO:<" + rcpt.encode() + b">\r\nDATA\r\nSubject: x\r\n\r\n"
                             b"spam\r\n.\r\nQUIT\r\n")
    tail = [r for r in replies if not r.startswith(("220", "250-", "250 "))]
    # refused at RCPT (5xx), so DATA has no recipients (503) and nothing is queued
    assert tail[0][:1] in ("5",) and not any(r.startswith("354") for r in replies), replies
    await asyncio.sleep(0.2)
    assert wire.transfers == [] and gw.runtime.spool.stats()["depth"] == 0
