"""The running SMS channel: what its HTTP handlers share (provider, relay, forwarder)."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

from aiohttp import web

from ..addresses import mask
from ..config import Stream
from ..logs import event
from ..runtime import Runtime
from .callbacks import status_url
from .forward import BackgroundTasks, Forwarder
from .inbound import InboundHandler
from .outbound import Relay
from .providers import OutboundSms, ProviderError, SmsProvider

log = logging.getLogger("gateway.sms")


@dataclass
class SmsChannel:
    rt: Runtime
    provider: SmsProvider
    relay: Relay
    inbound: InboundHandler
    forwarder: Forwarder
    tasks: BackgroundTasks

    @classmethod
    def build(cls, rt: Runtime, provider: SmsProvider, forwarder: Forwarder) -> SmsChannel:
        def callback_url(stream: Stream, app_url: str) -> str:
            return status_url(rt.settings, stream.id, app_url)

        return cls(rt, provider, Relay(rt, provider, callback_url), InboundHandler(rt),
                   forwarder, forwarder.tasks)

    def reply_by_text(self, to: str, from_: str, body: str) -> None:
        """Send a confirmation or help text in the background (providers whose webhooks
        cannot carry a reply, like Vonage's). A failure is logged, never retried by us."""
        self.tasks.spawn(self._reply(OutboundSms(to, from_, body)))

    async def _reply(self, text: OutboundSms) -> None:
        try:
            result = await self.provider.send(text)
        except ProviderError as exc:
            self.rt.note("sms_provider", False, str(exc))
            event(log, "sms_reply_failed", level=logging.WARNING, provider=self.provider.name,
                  code=exc.code, status=exc.status, to=mask(text.to))
            return
        self.rt.note("sms_provider", True)
        event(log, "sms_reply_sent", provider=self.provider.name, provider_id=result.message_id,
              to=mask(text.to))


SMS = web.AppKey("sms_channel", SmsChannel)


def log_failure(name: str, exc: Exception, **fields: object) -> None:
    """One log line for a failure of ours (the ledger, or a bug) that the caller was
    answered 503 for, without detail: the operator gets the error and where it was
    raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    event(log, name, logging.ERROR, **fields, error=repr(exc)[:300], where=where)


def channel(request: web.Request) -> SmsChannel:
    return request.app[SMS]
