"""The DATA body read in pieces (gateway/mail/data_reader.py) against aiosmtpd's own line
loop: the same raw byte streams, over real sockets, to both servers give the same answer
to DATA, the same body to the handler, and leave the command that follows the body (sent
in the same packet) for the next read."""

from __future__ import annotations

import asyncio

from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.mail.session import GatewaySMTP


class Capture:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.bodies.append(envelope.original_content)
        return "250 OK"


class Plain(SMTP):
    line_length_limit = GatewaySMTP.line_length_limit


class Pieces(Plain):
    smtp_DATA = GatewaySMTP.smtp_DATA


async def exchange(server_class, raw_body: bytes, size_limit: int) -> tuple:
    handler = Capture()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: server_class(handler, data_size_limit=size_limit, decode_data=False,
                             enable_SMTPUTF8=True, hostname="gw.test", loop=loop),
        "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                   limit=1 << 20)
    try:
        async def reply() -> bytes:
            lines = []
            while True:
                line = await asyncio.wait_for(reader.readline(), 20)
                lines.append(line)
                if line[3:4] != b"-":
                    return b"".join(lines)

        await reply()  # greeting
        for command in (b"EHLO client.test\r\n", b"MAIL FROM:<a@acme.test>\r\n",
                        b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n"):
            writer.write(command)
            await reply()
        writer.write(raw_body + b"NOOP\r\n")  # the next command in the same write
        await writer.drain()
        answer = (await reply()).split(b" ", 1)[0]
        after = (await reply()).split(b" ", 1)[0]
        return answer, after, handler.bodies
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


def both(raw_body: bytes, size_limit: int = 0) -> None:
    async def run():
        return (await exchange(Plain, raw_body, size_limit),
                await exchange(Pieces, raw_body, size_limit))

    plain, pieces = asyncio.run(run())
    assert pieces == plain


LINE = st.one_of(
    st.sampled_from([b"", b".", b"..", b"...", b"x.", b"Offer ends today.", b".hidden",
                     b" .", b"a\n.", b"\r", b".\r", b"end."]),
    st.binary(max_size=120).map(lambda b: b.replace(b"\r\n", b"")),
    st.integers(min_value=900, max_value=70_000).map(lambda n: b"y" * n),
    st.integers(min_value=1, max_value=40).map(lambda n: b"QUJD" * n))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINE, max_size=40),
       size_limit=st.sampled_from([0, 0, 300, 5000, 100_000]))
def test_any_body_reads_the_same_in_pieces_as_line_by_line(lines, size_limit):
    raw = b"".join(line.replace(b"\r\n", b"") + b"\r\n" for line in lines) + b".\r\n"
    both(raw, size_limit)


def test_an_empty_body_a_dot_stuffed_body_and_a_long_base64_part_read_the_same():
    both(b".\r\n")
    both(b"..\r\n..x\r\nline.\r\n.\r\n")
    both(b"Subject: x\r\n\r\n" + b"QUJDRA==" * 10 + b"\r\n" * 1 + (b"QUJD" * 19 + b"\r\n")
         * 4000 + b"end.\r\n.\r\n")  # ~300 KB with no "." line end for long stretches
    both(b"z" * 70_000 + b"\r\n.\r\n")  # one line over the limit: 500
    both(b"a\r\n" * 10 + b".\r\n", size_limit=20)  # over the size limit: 552
