"""Sending one spooled copy over an aiosmtplib connection, without the per-message work
`sendmail` repeats for any caller (issue 18: a fifth of the gateway's CPU per message).

`aiosmtplib.SMTP.sendmail` parses each address with `email.utils` three times, runs a
line-ending regex over the whole message twice (once for SIZE) and a dot-stuffing regex
once. A copy in our spool is already what those steps make of it: the gateway wrote it
with CRLF line endings, and its envelope addresses were validated when it was accepted. So
`CopyClient.send_copy` checks that with `bytes.count` (C, no allocation), dot-stuffs with
`bytes.replace`, and speaks MAIL, RCPT and DATA through aiosmtplib's own command path
(`execute_command`: its timeouts, its injection check, its disconnect handling). The bytes
on the wire are the ones `sendmail` would send: `crlf_form` and `dot_stuffed` are checked
against aiosmtplib's own functions in tests/mail/test_smtp_client.py, and whole
transactions against a sink. A non-ASCII address asks for SMTPUTF8 (RFC 6531), which the
gateway itself offers.
"""

from __future__ import annotations

import contextlib

import aiosmtplib
from aiosmtplib.errors import (
    SMTPDataError,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from aiosmtplib.protocol import LINE_ENDINGS_REGEX


def crlf_form(data: bytes) -> bytes:
    """`data` with CRLF line endings (a lone CR or LF becomes CRLF), ending with CRLF: what
    aiosmtplib's `normalize_message_line_endings` makes of it, and what SIZE counts."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = LINE_ENDINGS_REGEX.sub(b"\r\n", data)  # not our own copies: as aiosmtplib
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def dot_stuffed(clean: bytes) -> bytes:
    """A `crlf_form` message as DATA carries it: a line starting with "." doubled
    (RFC 5321 4.5.2), then the ".CRLF" that ends it."""
    if clean[:1] == b".":
        clean = b"." + clean
    return clean.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def _mailbox(address: str, utf8: bool) -> bytes:
    return b"<" + address.encode("utf-8" if utf8 else "ascii") + b">"


class CopyClient(aiosmtplib.SMTP):
    """An aiosmtplib connection that also sends one spooled copy at a time (one sender,
    one recipient, our own bytes). Everything else is aiosmtplib's."""

    async def send_copy(self, sender: str, recipient: str, data: bytes) -> str:
        """One MAIL/RCPT/DATA transaction; the server's reply to the data. Raises what
        `sendmail` raises for the same replies (SMTPSenderRefused, SMTPRecipientsRefused,
        SMTPDataError, SMTPNotSupported), after a RSET where `sendmail` sends one."""
        clean = crlf_form(data)
        if self.is_ehlo_or_helo_needed:
            await self.ehlo()
        utf8 = not (sender.isascii() and recipient.isascii())
        options: list[bytes] = []
        if utf8:
            if not self.supports_extension("smtputf8"):
                raise SMTPNotSupported("SMTPUTF8 is not supported by this server")
            options.append(b"SMTPUTF8")
        if self.supports_extension("size"):  # RFC 1870: the message, not the stuffing
            options.insert(0, b"SIZE=%d" % len(clean))
        reply = await self.execute_command(b"MAIL", b"FROM:" + _mailbox(sender, utf8),
                                           *options)
        if reply.code != 250:
            await self._rset_after_refusal()
            raise SMTPSenderRefused(reply.code, reply.message, sender)
        reply = await self.execute_command(b"RCPT", b"TO:" + _mailbox(recipient, utf8))
        if reply.code not in (250, 251):
            await self._rset_after_refusal()
            raise SMTPRecipientsRefused(
                [SMTPRecipientRefused(reply.code, reply.message, recipient)])
        reply = await self.execute_command(b"DATA")
        if reply.code != 354:
            await self._rset_after_refusal()
            raise SMTPDataError(reply.code, reply.message)
        reply = await self._send_data(dot_stuffed(clean))
        if reply.code != 250:
            await self._rset_after_refusal()
            raise SMTPDataError(reply.code, reply.message)
        return reply.message

    async def _send_data(self, wire: bytes) -> aiosmtplib.SMTPResponse:
        """The message after 354, and the server's reply; a timeout or lost connection
        closes the connection, as aiosmtplib's own commands do."""
        protocol = self.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Server not connected")
        try:
            # No await between the write and the read: the reply cannot arrive unheard.
            protocol.write(wire)
            return await protocol.read_response(timeout=self.timeout)
        except (SMTPServerDisconnected, SMTPReadTimeoutError):
            self.close()
            raise

    async def _rset_after_refusal(self) -> None:
        # As sendmail: a failed reset is not the error to report.
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPException):
            await self.rset()
