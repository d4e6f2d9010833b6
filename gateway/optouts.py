"""The one way an opt-out (or a START opt-in) is recorded, whichever way it came in: the
unsubscribe page and one-click, mail to the mailto address and replies, STOP texts, the
provider's own opt-out list, ESP webhooks and ARF complaints (`optout_events.py`), the
admin API and the CLI.

- A repeat records nothing: a request id (a provider's message id, say) is unique in the
  ledger, on every gateway sharing it; a token's opt-out still in force is found under the
  ledger's write lock.
- The metric and the log line are made here, once.
- When the ledger cannot be written (PostgreSQL down), an opt-out from a person (page,
  one-click, mailto, reply, STOP) is kept in `data_dir` and answered as usual; `replay`
  writes what was kept, in order, once the ledger is back. Operators' requests (API, CLI)
  fail instead, so the operator knows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from .addresses import mask
from .errors import StoreUnavailable
from .ledger import TokenRecord
from .ledger.pending import PendingOptOuts
from .logs import event
from .policy import ALL_CHANNELS

log = logging.getLogger("gateway.optouts")


def _time(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)

REPLAY_SECONDS = 1.0


@dataclass(frozen=True)
class OptOutRequest:
    """Who opts out of what, how, and the facts kept with it as its source."""

    org: str
    channel: str
    address: str
    source: str
    method: str
    kind: str = "optout"  # or "optin": START lifts an earlier STOP
    message_id: str | None = None
    client: str | None = None
    token: str | None = None
    request_id: str | None = None  # unique: a second request with it records nothing
    # Scoped to these categories (the preference centre); () opts out of the whole channel.
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recorded:
    """What became of a request."""

    new: bool  # recorded now, or kept to be written when the ledger is back
    queued: bool = False
    existing: dict | None = None  # the token's opt-out still in force (new is False)
    id: int | None = None


class OptOuts:
    """Records opt-outs (see module docstring); `consent` answers whether a token's earlier
    opt-out still holds (the person may have opted in again since)."""

    def __init__(self, ledger, consent, metrics, pending: PendingOptOuts | None):
        self.ledger = ledger
        self.consent = consent
        self.metrics = metrics
        self.pending = pending
        self._replay_waiting = False  # the last replay stopped on the ledger

    def record(self, request: OptOutRequest, *, token: TokenRecord | None = None,
               keep_if_unavailable: bool = True) -> Recorded:
        """Record `request` (blocking: call it in a thread). With `token`, nothing is
        recorded while that token's opt-out is still in force."""
        try:
            return self._write(request, token)
        except StoreUnavailable as exc:
            if not keep_if_unavailable or self.pending is None:
                raise
            return self._keep(request, str(exc))

    def _keep(self, request: OptOutRequest, why: str) -> Recorded:
        """Keep `request` in data_dir until the ledger takes it (StoreUnavailable when
        even that fails)."""
        if self.pending is None:
            raise StoreUnavailable(f"opt-out not recorded: {why}")
        kept = self.pending.add(dataclasses.asdict(request))
        event(log, "opt_out_kept", logging.WARNING, org=request.org, channel=request.channel,
              method=request.method, error=why, request_id=kept["request_id"])
        self._count(request)
        return Recorded(True, queued=True)

    def by_token(self, token: TokenRecord, *, method: str, client: str | None,
                 channel: str | None = None, source: str | None = None,
                 categories: tuple[str, ...] = ()) -> Recorded:
        """The opt-out an unsubscribe token asks for (page, one-click, mailto, reply): once
        while it is in force; again after the person opted in since. With `categories`
        (the preference centre), an opt-out of those only, recorded each time asked."""
        request = OptOutRequest(token.org, channel or token.channel, token.address,
                                source=source or f"unsubscribe {method}", method=method,
                                message_id=token.message_id, client=client, token=token.id,
                                categories=tuple(categories))
        if not token.org:  # unresolved (the ledger is away): completed when it is back
            return self._keep(request, "the token could not be resolved")
        return self.record(request, token=None if categories else token)

    def _write(self, request: OptOutRequest, token: TokenRecord | None,
               count: bool = True) -> Recorded:
        in_force = None if token is None else (lambda _: self.consent.still_opted_out(token))
        new_id, existing = self.ledger.opt_out_unless(
            in_force, request.org, request.channel, request.address, kind=request.kind,
            source=request.source, method=request.method, message_id=request.message_id,
            client=request.client, token=request.token, request_id=request.request_id,
            categories=tuple(request.categories))
        if new_id is None:
            return Recorded(False, existing=existing)
        if count:
            self._count(request)
        event(log, "opt_out" if request.kind == "optout" else "opt_in", org=request.org,
              channel=request.channel, method=request.method, address=mask(request.address),
              **({"categories": ",".join(request.categories)} if request.categories else {}))
        return Recorded(True, id=new_id)

    def _count(self, request: OptOutRequest) -> None:
        if request.kind == "optout" and self.metrics is not None:
            self.metrics.opt_outs.labels(request.channel, request.method).inc()

    # -- what was kept during an outage ----------------------------------------------------

    def replay(self) -> int:
        """Write the kept opt-outs to the ledger, oldest first, each once; stops at the
        first that still cannot be written. How many were written."""
        if self.pending is None:
            return 0
        written = 0
        for pending_id, kept_at, data in self.pending.oldest():
            request = OptOutRequest(**{**data, "categories": tuple(data.get("categories", ()))})
            try:
                request, token = self._complete(request)
                if request is not None:
                    # The check and the write in one ledger transaction: an erasure
                    # is either seen here or comes after, and removes what is written.
                    with self.ledger.exclusive():
                        if not self._erased_since(request, kept_at):
                            self._write(request, None if request.categories else token,
                                        count=False)  # counted when it was kept
            except StoreUnavailable as exc:
                if not self._replay_waiting:  # said once, not every second
                    event(log, "opt_out_replay_waiting", logging.WARNING,
                          left=self.pending.count, error=str(exc))
                self._replay_waiting = True
                break
            self.pending.remove(pending_id)
            written += 1
        else:
            self._replay_waiting = False
        if written:
            event(log, "opt_outs_replayed", count=written, left=self.pending.count)
        return written

    def _complete(self, request: OptOutRequest
                  ) -> tuple[OptOutRequest | None, TokenRecord | None]:
        """A kept request as it is written: an unresolved token's person and org read
        from the ledger now (None for a token the ledger does not know: dropped)."""
        if not request.token:
            return request, None
        if request.org:
            return request, TokenRecord(request.token, request.org, request.channel,
                                        request.address, None, request.message_id, None)
        record = self.ledger.token(request.token)
        if record is None:
            event(log, "opt_out_dropped", logging.WARNING, problem="unknown token",
                  request_id=request.request_id)
            return None, None
        channel = request.channel if request.channel == ALL_CHANNELS else record.channel
        return dataclasses.replace(request, org=record.org, channel=channel,
                                   address=record.address, message_id=record.message_id
                                   ), record

    def _erased_since(self, request: OptOutRequest, kept_at: str) -> bool:
        """The person of a kept request was erased, for its org (or every org), after it
        was kept (by another gateway, say, or `gateway erase`): writing it now would put
        their address back in the ledger. Their suppression entry blocks them already
        (`erased`), so it is dropped, and logged without the address. A request kept
        after an erasure is a new act of theirs (they came back): it is written."""
        if self.consent is None or not request.address:
            return False
        channel = request.channel
        if channel == ALL_CHANNELS:
            channel = "email" if "@" in request.address else "sms"
        suppressed_as = self.consent.suppression.of(channel, request.address)
        erasures = self.ledger.erasures_for(suppressed_as, request.org)
        if not any(_time(e["at"]) >= _time(kept_at) for e in erasures):
            return False
        event(log, "opt_out_dropped", logging.WARNING, problem="person erased since",
              org=request.org, channel=request.channel, request_id=request.request_id)
        return True

    async def keep_replaying(self) -> None:
        """While the gateway runs: replay whatever is kept, every REPLAY_SECONDS."""
        while True:
            if self.pending is not None and self.pending.count:
                await asyncio.to_thread(self.replay)
            await asyncio.sleep(REPLAY_SECONDS)
