"""The one place a channel asks "may this go?": classify, look up, decide, record."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings, Stream
from .ledger import DecisionRecord, Ledger
from .policy import NATURES, PURPOSES, Decision, MessageContext, OrgPolicy, decide


@dataclass(frozen=True)
class Classification:
    """Who sends what: the stream's defaults, possibly overridden per message."""

    org: str
    stream: str | None
    purpose: str
    nature: str
    category: str | None


def classify(stream: Stream | None, purpose: str | None = None, nature: str | None = None,
             category: str | None = None) -> Classification:
    """Stream defaults with per-message overrides. Anything unrecognised is marketing
    (fail closed): an unknown purpose never becomes `service`."""
    base_purpose = stream.purpose if stream else "marketing"
    base_nature = stream.nature if stream else "commercial"
    p = (purpose or base_purpose).strip().lower()
    n = (nature or base_nature).strip().lower()
    return Classification(
        org=stream.org if stream else "",
        stream=stream.id if stream else None,
        purpose=p if p in PURPOSES else "marketing",
        # An unknown nature is treated as campaigning: the stricter reading.
        nature=n if n in NATURES else "campaigning",
        category=(category or (stream.category if stream else "") or "").strip() or None,
    )


@dataclass(frozen=True)
class Verdict:
    """A decision plus what the channel should do with it in the current mode."""

    decision: Decision
    deliver: bool  # False only when enforcing a block
    decision_id: int


class ConsentService:
    """Decides for one recipient and appends the decision to the audit log."""

    def __init__(self, settings: Settings, ledger: Ledger):
        self.settings = settings
        self.ledger = ledger

    def org_policy(self, org_id: str) -> OrgPolicy:
        # An unknown org has no evidence and the strictest type: it can only be blocked.
        return self.settings.org_policy(org_id) or OrgPolicy(id=org_id or "?",
                                                             name=org_id or "?",
                                                             type="nonprofit")

    def evaluate(self, c: Classification, channel: str, address: str) -> Decision:
        """The decision alone, recorded nowhere (for `gateway check`)."""
        ctx = MessageContext(org=self.org_policy(c.org), channel=channel, purpose=c.purpose,
                             nature=c.nature, category=c.category)
        evidence, optouts = self.ledger.history(c.org, channel, address)
        return decide(ctx, evidence, optouts, self.settings.gateway.ruleset)

    def decide(self, c: Classification, channel: str, address: str,
               message_id: str | None = None) -> Verdict:
        """Decide and record. In monitor mode a block is recorded as would_block and the
        message is delivered anyway."""
        decision = self.evaluate(c, channel, address)
        mode = self.settings.gateway.mode
        decision_id = self.ledger.record_decision(decision, DecisionRecord(
            org=c.org, channel=channel, address=address, stream=c.stream, purpose=c.purpose,
            nature=c.nature, category=c.category, message_id=message_id, mode=mode,
        ))
        return Verdict(decision, decision.allowed or mode == "monitor", decision_id)
