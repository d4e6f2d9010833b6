"""What every part of a running gateway shares: settings, ledger, consent, tokens, metrics."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .config import Settings
from .consent import ConsentService
from .ledger import Ledger, now_iso, open_ledger
from .ledger.deferred import DeferredTexts
from .ledger.pending import PendingOptOuts
from .ledger.writer import Writer
from .logs import scrub
from .metrics import Metrics
from .optouts import OptOuts
from .subscriptions import Subscriptions
from .tokens import TokenBook

log = logging.getLogger("gateway")


@dataclass
class Runtime:
    settings: Settings
    ledger: Ledger
    consent: ConsentService
    tokens: TokenBook
    optouts: OptOuts
    metrics: Metrics = field(default_factory=Metrics)
    health: dict = field(default_factory=dict)  # component -> {"last_ok", "last_error", ...}
    dkim: object | None = None  # the mail channel's DKIM signer, when [dkim] is set
    spool: object | None = None  # the mail spool, once the mail channel has started
    health_probes: dict = field(default_factory=dict)  # name -> async () -> bool (/healthz)
    # name -> () -> dict (or awaitable dict): live state shown on /status, e.g. "spool"
    status_providers: dict = field(default_factory=dict)
    # Which of `settings.gateway.processes` worker processes this is (0 when alone), and
    # the listening sockets the supervisor made for the workers ("smtp", "http").
    worker: int = 0
    sockets: dict = field(default_factory=dict)
    # The double opt-in (gateway/subscriptions.py) and, per channel, what sends its
    # confirmation message (set by the channel when it starts).
    subscriptions: Subscriptions | None = None
    confirmation_senders: dict = field(default_factory=dict)
    # component -> the second of its last noted success (see `note`)
    _ok_second: dict = field(default_factory=dict, repr=False)
    # Texts held until the recipient's quiet hours end (local to data_dir, like the spool).
    deferred: DeferredTexts | None = None

    @classmethod
    def open(cls, settings: Settings, worker: int = 0, sockets: dict | None = None) -> Runtime:
        ledger = open_ledger(settings.ledger.url, settings.gateway.data_dir,
                             cache=settings.ledger.cache)
        consent = ConsentService(settings, ledger)
        metrics = Metrics()
        pending = PendingOptOuts(settings.gateway.data_dir)
        return cls(settings=settings, ledger=ledger, consent=consent,
                   tokens=TokenBook(ledger, settings.unsubscribe.secrets),
                   optouts=OptOuts(ledger, consent, metrics, pending), metrics=metrics,
                   worker=worker, sockets=dict(sockets or {}),
                   deferred=DeferredTexts(settings.gateway.data_dir),
                   subscriptions=Subscriptions(settings, ledger))

    @property
    def writer(self) -> Writer:
        """The batching writer of the hot paths (the consent service's)."""
        return self.consent.writer

    def close(self) -> None:
        self.consent.writer.close()
        self.ledger.close()
        if self.optouts.pending is not None:
            self.optouts.pending.close()
        if self.deferred is not None:
            self.deferred.close()

    def unsubscribe_url(self, token: str) -> str:
        return f"{self.settings.http.public_url}/u/{token}"

    def unsubscribe_mailto(self, token: str) -> str:
        return f"unsubscribe+{token}@{self.settings.unsubscribe.mailto_domain}"

    def note(self, component: str, ok: bool, detail: str = "") -> None:
        """Remember the last success / error of an upstream (shown on /status)."""
        if ok:  # the hot paths say so per message: to the second is enough
            second = int(time.time())
            if self._ok_second.get(component) == second:
                return
            self._ok_second[component] = second
        else:
            self._ok_second.pop(component, None)  # the next success is news again
        entry = self.health.setdefault(component, {})
        entry["last_ok" if ok else "last_error"] = now_iso()
        if not ok:
            entry["error"] = scrub(detail)  # an upstream's reply often names the recipient
