"""Starts the email channel: the SMTP listener, the spool and the delivery workers."""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web

from ..ledger.spool import open_spool, spool_stats
from ..logs import event
from ..runtime import Runtime
from .confirm import email_sender
from .delivery import Delivery
from .dkim_sign import load_signer
from .session import GatewayHandler, GatewaySMTP

log = logging.getLogger("gateway.smtp")


# aiosmtpd counts commands per connection, not per message: the transaction commands a
# mailer repeats on a reused connection are effectively unlimited (our own per-message
# RCPT cap applies); anything else (NOOP, VRFY, HELP, EHLO floods) is cut off with 421.
_UNLIMITED = 2**31
DRAIN_SECONDS = 30.0
CALL_LIMITS = {"MAIL": _UNLIMITED, "RCPT": _UNLIMITED, "DATA": _UNLIMITED,
               "RSET": _UNLIMITED, "NOOP": 1000, "*": 100}


def tls_context(cert: str, key: str) -> ssl.SSLContext | None:
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def start(rt: Runtime, app: web.Application):
    """Open the spool, start delivery (whatever is spooled goes out at once), then listen."""
    s = rt.settings
    # aiosmtpd logs a deprecation notice on every AUTH; keep only its errors.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    if s.dkim.enabled:
        rt.dkim = load_signer(s.dkim.domain, s.dkim.selector, s.dkim.private_key_file)
    spool = await asyncio.to_thread(open_spool, s.gateway.data_dir, rt.worker,
                                    s.gateway.processes)
    delivery = Delivery(rt, spool)
    delivery.start()
    handler = GatewayHandler(rt, spool, delivery.wake)
    rt.confirmation_senders["email"] = email_sender(rt, spool, delivery.wake)
    context = tls_context(s.smtp.tls_cert, s.smtp.tls_key)
    loop = asyncio.get_running_loop()

    def protocol() -> GatewaySMTP:
        return GatewaySMTP(
            handler, data_size_limit=s.smtp.max_message_size, enable_SMTPUTF8=True,
            decode_data=False, hostname=s.smtp.hostname, ident="consent-gateway",
            tls_context=context, timeout=s.smtp.timeout, authenticator=handler.authenticate,
            auth_require_tls=True, command_call_limit=CALL_LIMITS, loop=loop)

    try:
        if "smtp" in rt.sockets:
            server = await loop.create_server(protocol, sock=rt.sockets["smtp"])
        else:
            server = await loop.create_server(protocol, s.smtp.listen.host, s.smtp.listen.port,
                                              reuse_address=True)
    except BaseException:
        await delivery.stop()
        spool.close()
        raise
    rt.health_probes["spool"] = lambda: asyncio.to_thread(spool.healthy)
    rt.spool = spool
    rt.status_providers["spool"] = lambda: spool_stats(s.gateway.data_dir)
    event(log, "smtp_listening", listen=str(s.smtp.listen), tls=bool(context),
          upstream=s.delivery.upstream.split("@")[-1])

    async def stop() -> None:
        server.close()
        await server.wait_closed()
        # Open sessions get 421 for anything new; what is being decided and spooled
        # finishes first (it needs the spool and the ledger).
        if not await handler.drained(DRAIN_SECONDS):
            event(log, "smtp_drain_timeout", logging.WARNING, seconds=DRAIN_SECONDS)
        await delivery.stop()
        await asyncio.to_thread(spool.close)
        event(log, "smtp_stopped")

    return stop
