"""The SMTP session: aiosmtpd's protocol engine with our handler hooks. Policy lives in
`consent`; this module only maps SMTP commands onto it and answers in SMTP terms."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import ipaddress
import logging
import math
import re
import traceback
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.utils import getaddresses

from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
)

from ..addresses import mask, normalise_email
from ..anvil import Anvil
from ..config import Stream
from ..consent import classify
from ..errors import InvalidAddress, StoreUnavailable, TokenError
from ..ledger import TokenRecord
from ..ledger.spool import Copy, Spool
from ..ledger.writer import Writes
from ..logs import event
from ..optout_events import record_event
from ..runtime import Runtime
from .copies import Prepared, prepare
from .data_reader import read_data
from .dsn import build_dsn
from .feedback import is_report_address, read_report
from .inbound import read_reply
from .rewrite import UnrewritableMessage

log = logging.getLogger("gateway.smtp")

SHUTTING_DOWN = "421 4.3.2 Service shutting down; try again later"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
NO_SUCH_TOKEN = "550 5.1.1 No such unsubscribe address (unknown or invalid token)"

# Up to this much work (message size x recipients) is prepared on the event loop itself.
INLINE_PREPARE_BYTES = 256 * 1024


def peer_ip(session: Session) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(session.peer[0])
    except (TypeError, ValueError, IndexError):
        return None


# A reverse- or forward-path in its plainest form, `<dot-atom@domain>` and optional spaces:
# what nearly every MAIL and RCPT carries. See GatewaySMTP._getaddr.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*")


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP, allowing AUTH without TLS only from loopback clients."""

    # RFC 5321 caps lines at 1000 octets, but real mailers exceed it; like Postfix we
    # accept longer lines (the rewrite re-encodes the parts it changes) up to 64 KiB.
    line_length_limit = 65536

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's path parser (the email package's header parser, ~45 µs a call) with
        a shortcut for the plainest form, giving the same answer (a property test checks
        it against aiosmtpd's own) in a regex match. Anything else goes to aiosmtpd."""
        m = _PLAIN_PATH.match(arg)
        if m is None or arg[m.end():m.end() + 1] == "(":  # a comment: aiosmtpd's job
            return super()._getaddr(arg)
        address = m.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, arg[m.end():]

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's name
        """aiosmtpd's DATA with the body read in pieces (`data_reader`), not line by line:
        the same checks, answers and handler call, for a fraction of the CPU."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            body, problem = await read_data(self._reader, self.data_size_limit,
                                            self.line_length_limit)
        except asyncio.CancelledError:  # the connection went during DATA
            self._writer.close()
            raise
        if problem is not None:
            await self.push(problem)
            self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = body
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        try:
            loopback = ipaddress.ip_address(peer[0]).is_loopback
        except (TypeError, ValueError, IndexError):
            loopback = False
        self._auth_require_tls = not loopback

    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's name
        """AUTH, throttled per client address (`gateway.anvil`): a client with recent
        failures waits before its attempt is read, and one that failed too often is
        refused with 421 and disconnected, whatever it sends now."""
        failures: Anvil = self.event_handler.auth_failures
        client = self.session.peer[0] if self.session else "?"
        wait = failures.retry_after(client)
        if wait is not None:
            await self.push(f"421 4.7.0 Too many failed authentications from your address; "
                            f"try again in {math.ceil(wait)} seconds")
            self.transport.close()
            return
        delay = failures.delay(client)
        if delay:
            await asyncio.sleep(delay)
        await super().smtp_AUTH(arg)

    async def handle_exception(self, error: Exception) -> str:
        """An internal error in a command (the ledger unreadable while deciding, a bug):
        a temporary failure, so the mailer retries, and no detail for the client. The
        log gets the exception and where it was raised, never the message."""
        peer = self.session.peer[0] if self.session else "?"
        if isinstance(error, TLSSetupException):  # the client's handshake; aiosmtpd hangs up
            event(log, "tls_failed", logging.WARNING, peer=peer, error=repr(error.__cause__))
            return ""
        frame = traceback.extract_tb(error.__traceback__)[-1]
        event(log, "smtp_internal_error", logging.ERROR, peer=peer,
              error=repr(error)[:300], where=f"{frame.filename}:{frame.lineno}")
        return "451 4.3.0 Temporary local problem; try again later"


@dataclass
class Transaction:
    """Our per-envelope state beside aiosmtpd's Envelope."""

    relay: list[str] = field(default_factory=list)  # recipients to decide and deliver
    # Mail to the mailto domain: (kind, token, its record), each token at most once.
    inbound: list[tuple[str, str, TokenRecord]] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)  # ARF report addresses (feedback.py)

    @property
    def recipients(self) -> int:
        """Recipients accepted so far, of every kind: together within `max_recipients`."""
        return len(self.relay) + len(self.inbound) + len(self.reports)

    def kind_accepted(self, record: TokenRecord) -> str | None:
        """The kind ("unsubscribe", "reply") this token was accepted as, if it was."""
        return next((kind for kind, _, r in self.inbound if r.id == record.id), None)


def sender_of(envelope: Envelope) -> str:
    """The envelope sender; "" for the null sender `<>` (bounces)."""
    sender = envelope.mail_from or ""
    return "" if sender == "<>" else sender


def reply_targets(header_value: str | None) -> list[str]:
    """Bare addresses of the original Reply-To (or From) kept with the token."""
    if not header_value:
        return []
    decoded = str(make_header(decode_header(header_value)))
    return [addr for _, addr in getaddresses([decoded])
            if "@" in addr and not has_control(addr) and " " not in addr]


def has_control(text: str) -> bool:
    """A control character (NUL, a bare CR or LF, ...): never valid in an address, and in
    Return-Path or an upstream MAIL command it could start a header or a command."""
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


def _tx(envelope: Envelope) -> Transaction:
    tx = getattr(envelope, "gateway_tx", None)
    if tx is None:
        tx = Transaction()
        envelope.gateway_tx = tx  # type: ignore[attr-defined]
    return tx


class GatewayHandler:
    """handle_RCPT / handle_DATA hooks; `wake` tells delivery there is new work."""

    def __init__(self, rt: Runtime, spool: Spool, wake):
        self.rt = rt
        self.spool = spool
        self.wake = wake
        self.settings = rt.settings
        # Big messages are prepared one at a time: the GIL runs one anyway, and each
        # holds several times its size while it is rewritten.
        self._big = asyncio.Semaphore(1)
        # Shutting down: new transactions are refused with 421; `drained` waits for the
        # RCPT/DATA hooks still at work (they need the ledger and the spool).
        self.closing = False
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def _working(self):
        self._busy += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    async def drained(self, timeout: float) -> bool:
        """Refuse new transactions; wait for the hooks at work. False on timeout."""
        self.closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- authentication -----------------------------------------------------------------

    @functools.cached_property
    def auth_failures(self) -> Anvil:
        """Failed AUTHs per client address, for `GatewaySMTP.smtp_AUTH`'s throttle."""
        return Anvil()

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode("utf-8", "replace")
            stream = self.settings.stream_for_smtp_user(user)
            ok = stream is not None and bool(stream.smtp_password) and hmac.compare_digest(
                auth_data.password, stream.smtp_password.encode())
            if ok:
                event(log, "auth_ok", user=user, peer=session.peer[0])
                return AuthResult(success=True, auth_data=stream.id)
            failures = self.auth_failures.fail(session.peer[0])
            event(log, "auth_failed", logging.WARNING, user=user, peer=session.peer[0],
                  failures=failures)
            if failures == self.auth_failures.limit:
                event(log, "auth_refused", logging.WARNING, peer=session.peer[0],
                      failures=failures, window=self.auth_failures.window)
        return AuthResult(success=False, handled=False)

    def stream_for(self, session: Session, envelope: Envelope) -> Stream | None:
        """The authenticated stream, or for a trusted network the stream named by the
        sender's local part (else the first). None: this client may not relay."""
        if session.authenticated and session.auth_data:
            return self.settings.stream(session.auth_data)
        ip = peer_ip(session)
        if ip is not None and any(ip in net for net in self.settings.smtp.trusted_networks):
            local = sender_of(envelope).rpartition("@")[0]
            return self.settings.stream_for_smtp_user(local) or (
                self.settings.streams[0] if self.settings.streams else None)
        return None

    # -- hooks ----------------------------------------------------------------------------

    async def handle_MAIL(self, server, session, envelope, address: str, mail_options):
        if self.closing:
            return SHUTTING_DOWN
        if has_control(address):
            return "553 5.1.7 Bad sender address: control characters are not allowed"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options):
        if self.closing:
            return SHUTTING_DOWN
        with self._working():
            return await self._rcpt(session, envelope, address, rcpt_options)

    async def _rcpt(self, session, envelope, address: str, rcpt_options):
        tx = _tx(envelope)
        local, _, domain = address.rpartition("@")
        if is_report_address(self.settings, address):  # ARF reports, from anyone
            return self._rcpt_report(envelope, tx, address)
        if domain.lower() == self.settings.unsubscribe.mailto_domain:
            return await self._rcpt_mailto(envelope, tx, address, local)
        stream = self.stream_for(session, envelope)
        if stream is None:
            event(log, "relay_denied", logging.WARNING, peer=session.peer[0], rcpt=mask(address))
            return "550 5.7.1 Relaying denied: authenticate (AUTH) or use a trusted network"
        if tx.recipients >= self.settings.smtp.max_recipients:
            return TOO_MANY_RECIPIENTS
        try:
            normalised = normalise_email(address)
        except InvalidAddress as exc:
            return f"553 5.1.3 Bad recipient address: {exc.reason}"[:500]
        if not stream.allow_headers:
            refusal = await self._decide_at_rcpt(stream, normalised)
            if refusal:
                return refusal
        tx.relay.append(address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def _rcpt_mailto(self, envelope, tx: Transaction, address: str, local: str):
        """`unsubscribe+TOKEN` and `reply+TOKEN`, from anyone: within `max_recipients`
        (counted with the relay recipients), and each token accepted once per
        transaction, so one reply is never relayed twice."""
        kind, _, token = local.partition("+")
        kind = kind.lower()
        if kind not in ("unsubscribe", "reply") or not token:
            return NO_SUCH_TOKEN
        if tx.recipients >= self.settings.smtp.max_recipients:
            return TOO_MANY_RECIPIENTS
        try:  # a reply needs its relay target from the ledger: 451 while it is away
            record = await asyncio.to_thread(self.rt.tokens.resolve_or_unresolved, token,
                                             "email") if kind == "unsubscribe" else \
                await asyncio.to_thread(self.rt.tokens.resolve, token)
        except TokenError:
            return NO_SUCH_TOKEN
        accepted_as = tx.kind_accepted(record)
        if accepted_as == kind:
            # Permanent: the address gets this message already; a retry would relay it again.
            return "550 5.5.0 Duplicate recipient: already accepted in this transaction"
        if accepted_as is not None:
            # The token's other address: it does its own job in a transaction of its own.
            return "452 4.5.3 This token was accepted in this transaction; send to this " \
                   "address in another"
        tx.inbound.append((kind, token, record))
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    def _rcpt_report(self, envelope, tx: Transaction, address: str) -> str:
        """A report address: accepted from anyone, within `max_recipients`; the message
        is read as an ARF report once, however many report addresses it names."""
        if tx.recipients >= self.settings.smtp.max_recipients:
            return TOO_MANY_RECIPIENTS
        if address.lower() in (a.lower() for a in tx.reports):
            return "550 5.5.0 Duplicate recipient: already accepted in this transaction"
        tx.reports.append(address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def _decide_at_rcpt(self, stream: Stream, address: str) -> str | None:
        """Without header overrides the decision is certain at RCPT: refuse blocks now."""
        c = classify(stream)
        decision = self.rt.consent.evaluate(c, "email", address)
        if decision.allowed or self.settings.gateway.monitor:
            return None
        verdict = await self.rt.consent.arecord(c, "email", address, decision)
        self.rt.metrics.decisions.labels("email", verdict.outcome, decision.reason).inc()
        return f"550 5.7.1 Recipient blocked by consent gateway: {decision.reason}"

    async def handle_DATA(self, server, session, envelope):
        if self.closing:
            return SHUTTING_DOWN
        with self._working():
            return await self._data(session, envelope)

    async def _data(self, session, envelope):
        tx = _tx(envelope)
        raw = envelope.original_content or b""
        try:
            inbound_copies = await self._inbound(session, envelope, tx, raw)
            if tx.reports:
                await self._report(raw)
            if not tx.relay:
                if inbound_copies:
                    await self.rt.writer.write(Writes(spool=self.spool, copies=inbound_copies))
                    self.wake()
                return "250 2.0.0 OK"
            stream = self.stream_for(session, envelope)
            mail_from = sender_of(envelope)
            try:
                prepared = await self._prepare(raw, mail_from, tx.relay, stream)
            except UnrewritableMessage as exc:
                self.rt.metrics.smtp_messages.labels("unrewritable").inc()
                event(log, "refused_unrewritable", logging.WARNING, error=str(exc))
                return f"554 5.6.0 Message refused: cannot insert the required opt-out " \
                       f"safely ({exc})"[:500]
            return await self._store(prepared, raw, mail_from, inbound_copies)
        except StoreUnavailable as exc:
            event(log, "store_unavailable", logging.ERROR, error=str(exc))
            self.rt.metrics.smtp_messages.labels("tempfail").inc()
            return "451 4.3.0 Temporary local problem (store unavailable); try again later"

    async def _prepare(self, raw: bytes, mail_from: str, rcpts: list[str],
                       stream: Stream | None) -> Prepared:
        """Decide and build every copy (`prepare`; UnrewritableMessage before anything is
        recorded). On the event loop when the work is small: a thread hand-over costs
        more than the work. Big messages, many copies and DKIM signing go to a thread, so
        the loop keeps serving the other clients meanwhile."""
        if len(raw) * len(rcpts) <= INLINE_PREPARE_BYTES and self.rt.dkim is None:
            return prepare(self.rt, raw, mail_from, rcpts, stream)
        async with self._big:
            return await asyncio.to_thread(prepare, self.rt, raw, mail_from, rcpts, stream)

    async def _store(self, prepared: Prepared, raw: bytes, mail_from: str,
                     inbound_copies: list[Copy]) -> str:
        """Record the decisions and tokens and spool the copies (one submission to the
        writer: committed, the spool fsync'd, before this returns), then answer. Tokens
        and decisions go first: a copy must never go out with a link that does not
        resolve, nor unaudited (once spooled, it goes out even if a later write fails,
        and the client, told 451, would send it again)."""
        consent = self.rt.consent
        c = prepared.classification
        entries = [consent.entry(c, "email", address, decision, prepared.message_id)
                   for address, decision in prepared.decisions]
        copies = list(inbound_copies) + prepared.copies
        blocked = prepared.blocked
        nothing_to_deliver = bool(blocked) and not prepared.copies
        if blocked and mail_from and not nothing_to_deliver:
            dsn = build_dsn(hostname=self.settings.smtp.hostname, to=mail_from,
                            original=raw, failures=blocked)
            copies.append(Copy("dsn", "", mail_from, dsn, prepared.message_id, c.stream,
                               c.org))
        written = await self.rt.writer.write(Writes(
            tokens=() if nothing_to_deliver else prepared.tokens, decisions=entries,
            spool=self.spool if copies else None, copies=copies))
        for (_, decision), decision_id in zip(prepared.decisions, written.decision_ids):
            outcome = consent.verdict(decision, decision_id).outcome
            self.rt.metrics.decisions.labels("email", outcome, decision.reason).inc()
        if nothing_to_deliver:
            # Nothing to deliver: refuse the whole message, naming every reason.
            if copies:
                self.wake()
            self.rt.metrics.smtp_messages.labels("blocked").inc()
            reasons = ", ".join(sorted({f.reason for f in blocked}))
            return f"550 5.7.1 Message blocked by consent gateway: {reasons}"
        self.wake()
        self.rt.metrics.smtp_messages.labels("accepted").inc()
        event(log, "accepted", message_id=prepared.message_id, copies=len(prepared.copies),
              blocked=len(blocked))
        return f"250 2.0.0 OK: queued {len(prepared.copies)} cop" \
               f"{'y' if len(prepared.copies) == 1 else 'ies'} as {prepared.message_id}"

    async def _inbound(self, session, envelope, tx: Transaction, raw: bytes) -> list[Copy]:
        """Mail to the mailto domain: record opt-outs; relay a reply on, once to each
        original reply address however many of its tokens name it. `raw` is at most
        `max_message_size` (the listener refuses more with 552). The reply is read in a
        thread: only a bounded prefix, but crafted input can still take milliseconds."""
        if not tx.inbound:
            return []
        mail_from = sender_of(envelope)
        reply = await asyncio.to_thread(read_reply, raw, mail_from)
        client = f"{session.peer[0]} from={reply.author}"
        copies = []
        relayed: set[str] = set()
        for kind, token, record in tx.inbound:
            if kind == "unsubscribe":
                await self._opt_out(record, token, "mailto", client)
                continue
            if reply.opt_out:
                await self._opt_out(record, token, "reply", f"{client} ({reply.opt_out})")
            for target in reply_targets(record.reply_to):
                if target.lower() not in relayed:
                    relayed.add(target.lower())
                    copies.append(Copy("reply", mail_from, target, raw, reply.message_id,
                                       record.stream, record.org))
        return copies

    async def _report(self, raw: bytes) -> None:
        """An ARF report: a complaint opt-out by the reported copy's token, or kept for the
        operator (mail/feedback.py). StoreUnavailable goes up: 451, the sender retries."""
        settings = self.settings
        report = await asyncio.to_thread(read_report, raw, settings.http.public_url,
                                         settings.unsubscribe.mailto_domain)
        await asyncio.to_thread(record_event, self.rt, report)

    async def _opt_out(self, record: TokenRecord, token: str, method: str, client: str) -> None:
        await asyncio.to_thread(self.rt.optouts.by_token, record, method=method, client=client,
                                source=f"{method} to the mailto address")
