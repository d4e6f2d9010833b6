"""Deferred texts (docs/rulesets.md, "A third outcome: defer"; contract "Rule sets per
recipient"): a text whose decision is `quiet_hours` is held durably (gateway/ledger/
deferred.py) and the app told when it will go; `DeferredSender` takes each one when its
time comes, decides it again (an opt-out meanwhile drops it, the decision recorded) and
sends it as any other text, with brand and opt-out added then."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

from ..addresses import mask
from ..config import Stream
from ..consent import Classification
from ..errors import GatewayError, StoreUnavailable
from ..ledger.deferred import DeferredText
from ..logs import event
from ..policy import Decision
from ..runtime import Runtime

if TYPE_CHECKING:
    from .outbound import Prepared, Relay

log = logging.getLogger("gateway.sms.deferred")

#: How often the held texts are looked at: a text goes within this of its send_at.
POLL_SECONDS = 5.0
#: After a provider failure or a ledger outage, the next try.
RETRY_SECONDS = 60.0


class TextDeferred(GatewayError):
    """The text is held, to be decided again and sent at `send_at`."""

    def __init__(self, decision: Decision, message_id: str, to: str, from_: str, body: str):
        self.decision, self.message_id = decision, message_id
        self.to, self.from_, self.body = to, from_, body
        self.send_at: datetime = decision.send_at or datetime.now(UTC)
        super().__init__(f"deferred: {decision.reason} until {self.send_at.isoformat()}")


async def hold_text(rt: Runtime, stream: Stream, text: Prepared, message_id: str,
                    decision: Decision, status_callback: str | None) -> NoReturn:
    """Keep the text (committed before the app hears of it) and raise TextDeferred."""
    c = text.classification
    held = DeferredText(message_id=message_id, stream=stream.id, org=stream.org, to=text.to,
                        from_=text.from_, body=text.body, purpose=c.purpose, nature=c.nature,
                        category=c.category, status_callback=status_callback,
                        created_at=time.time(), send_at=decision.send_at.timestamp())
    await asyncio.to_thread(rt.deferred.hold, held)
    event(log, "sms_deferred", stream=stream.id, message_id=message_id,
          reason=decision.reason, send_at=decision.send_at.isoformat(), to=mask(text.to))
    raise TextDeferred(decision, message_id, text.to, text.from_, text.body)


class DeferredSender:
    """Sends held texts when their time comes; one task per gateway process."""

    def __init__(self, rt: Runtime, relay: Relay, poll: float | None = None):
        self.rt, self.relay = rt, relay
        self.poll = POLL_SECONDS if poll is None else poll
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        while True:
            wait = self.poll
            try:
                await self.send_due()
                first = (await asyncio.to_thread(self.rt.deferred.stats))["next_send_at"]
                if first is not None:  # wake for the next one, not up to `poll` late
                    wait = min(self.poll, max(0.05, first - time.time()))
            except StoreUnavailable as exc:
                event(log, "deferred_texts_unavailable", logging.WARNING, error=str(exc))
            await asyncio.sleep(wait)

    async def send_due(self) -> int:
        """Send (or drop, or hold again) every text whose time has come; how many."""
        due = await asyncio.to_thread(self.rt.deferred.due)
        for held in due:
            if await asyncio.to_thread(self.rt.deferred.claim, held.id):
                await self.send_one(held)
        return len(due)

    async def send_one(self, held: DeferredText) -> None:
        from .outbound import Prepared, TextBlocked
        from .providers import ProviderError

        store = self.rt.deferred
        c = Classification(org=held.org, stream=held.stream, purpose=held.purpose,
                           nature=held.nature, category=held.category)
        stream = self.rt.settings.stream(held.stream)
        try:
            verdict = await self.rt.consent.adecide(c, "sms", held.to, held.message_id)
        except StoreUnavailable:
            await asyncio.to_thread(store.reschedule, held.id, time.time() + RETRY_SECONDS)
            return
        decision = verdict.decision
        if decision.deferred and not verdict.deliver:
            await asyncio.to_thread(store.reschedule, held.id, decision.send_at.timestamp())
            return
        if stream is None:  # the stream left the config meanwhile: nothing to send it as
            event(log, "sms_deferred_dropped", logging.WARNING, message_id=held.message_id,
                  reason="unknown_stream", stream=held.stream)
            await asyncio.to_thread(store.done, held.id)
            return
        text = Prepared(held.to, held.from_, held.body, c)
        try:
            await self.relay.send_decided(stream, text, held.message_id, verdict,
                                          held.status_callback)
        except TextBlocked as exc:
            event(log, "sms_deferred_dropped", message_id=held.message_id,
                  reason=exc.decision.reason, to=mask(held.to))
        except ProviderError as exc:
            if exc.retryable:
                await asyncio.to_thread(store.reschedule, held.id, time.time() + RETRY_SECONDS)
                return
            event(log, "sms_deferred_refused", logging.WARNING, message_id=held.message_id,
                  provider=exc.provider, code=exc.code)
        await asyncio.to_thread(store.done, held.id)
