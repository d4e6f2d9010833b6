"""Starts the SMS channel: one provider, one HTTP client session, and the routes.

Routes added to the gateway's HTTP app:

- ``POST /api/v1/sms`` (api.py) and ``POST /2010-04-01/Accounts/{id}/Messages.json``
  (twilio_api.py): apps send texts; one consent decision each, opt-out text added.
- ``POST /sms/inbound/twilio``, ``GET|POST /sms/inbound/vonage`` and
  ``GET|POST /sms/status/{id}`` (webhooks.py): the providers call us.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime

import aiohttp
from aiohttp import web

from ..logs import event
from ..runtime import Runtime
from . import api, twilio_api, webhooks
from .channel import SMS, SmsChannel
from .confirm import sms_sender
from .deferral import DeferredSender
from .forward import BackgroundTasks, Forwarder
from .providers import make_provider

log = logging.getLogger("gateway.sms")

# Provider requests: timeout per try, retries after the first, first back-off (seconds).
PROVIDER_TIMEOUT = 10.0
PROVIDER_RETRIES = 3
PROVIDER_BACKOFF = 0.5
# Forwards to apps (inbound replies, statuses): tries in all, first back-off (seconds).
FORWARD_ATTEMPTS = 3
FORWARD_BACKOFF = 0.5


def deferred_status(rt: Runtime) -> dict:
    """/status: how many texts wait for their recipient's quiet hours to end, and when
    the next one goes."""
    stats = rt.deferred.stats()
    first = stats["next_send_at"]
    return {"count": stats["count"], "next_send_at": None if first is None else
            datetime.fromtimestamp(first, UTC).isoformat(timespec="seconds")}


async def start(rt: Runtime, app: web.Application) -> Callable[[], Awaitable[None]]:
    """Create the provider and the shared client session; add the SMS routes."""
    s = rt.settings.sms
    # No cookie jar: providers' and apps' cookies mean nothing to us, and a jar would be
    # searched on every request and filled from every answer.
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    try:
        provider = make_provider(
            s.provider, outbox_path=s.outbox, twilio=asdict(s.twilio),
            vonage=asdict(s.vonage), session=session, timeout=PROVIDER_TIMEOUT,
            retries=PROVIDER_RETRIES, backoff=PROVIDER_BACKOFF)
    except BaseException:
        await session.close()
        raise
    tasks = BackgroundTasks()
    forwarder = Forwarder(rt, session, tasks, attempts=FORWARD_ATTEMPTS,
                          backoff=FORWARD_BACKOFF)
    app[SMS] = SmsChannel.build(rt, provider, forwarder)
    # Texts held for the recipient's quiet hours go when their time comes (deferral.py).
    deferred = DeferredSender(rt, app[SMS].relay)
    deferred.start()
    rt.status_providers["deferred_texts"] = lambda: deferred_status(rt)
    rt.confirmation_senders["sms"] = sms_sender(rt, app[SMS].relay)  # double opt-in
    app.add_routes(api.routes)
    app.add_routes(twilio_api.routes)
    app.add_routes(webhooks.routes)
    event(log, "sms_ready", provider=provider.name,
          forward=bool(s.inbound_forward_url))

    async def stop() -> None:
        await deferred.stop()
        await tasks.close()
        await session.close()
        event(log, "sms_stopped")

    return stop
