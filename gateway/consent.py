"""The one place a channel asks "may this go?": classify, look up, decide, record."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from .config import Settings, Stream
from .ledger import DecisionRecord, Ledger, TokenRecord
from .ledger.queries import History
from .ledger.writer import Writer, Writes
from .policy import (
    ERASED_KIND,
    NATURES,
    PURPOSES,
    Decision,
    Evidence,
    MessageContext,
    OptOut,
    OrgPolicy,
    decide,
    get_ruleset,
    reasons,
)
from .policy.regions import RulesetChoice, choose
from .privacy.suppression import SuppressionKey, load_key


def _settled(evidence: tuple[Evidence, ...], now: datetime) -> bool:
    """No record's date is still to come: for an org whose allows cannot lapse
    (`ConsentService.timeless`) the decision on these records is then the same at any
    later time (the rules compare only those dates with the message's time)."""
    return all(e.obtained_at <= now and (e.relationship_ended_at is None
                                         or e.relationship_ended_at <= now)
               and (e.confirmed_at is None or e.confirmed_at <= now) for e in evidence)


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

    @property
    def outcome(self) -> str:
        """allowed, blocked, or would_block (a block in monitor mode): as recorded."""
        if self.decision.allowed:
            return "allowed"
        if self.decision.deferred and not self.deliver:
            return "defer"
        return "blocked" if not self.deliver else "would_block"


class ConsentService:
    """Decides for one recipient and appends the decision to the audit log."""

    def __init__(self, settings: Settings, ledger: Ledger, writer: Writer | None = None):
        self.settings = settings
        self.ledger = ledger
        self.writer = writer or Writer(ledger)
        # Tells this service's decisions from those of an earlier run (other settings).
        self.incarnation = secrets.token_hex(8)
        self._timeless: dict[str, bool] = {}  # per org: settings never change while running
        # Finds the erasures of the person decided for (docs/privacy.md).
        self.suppression: SuppressionKey = load_key(settings, ledger)

    def org_policy(self, org_id: str) -> OrgPolicy:
        # An unknown org has no evidence and the strictest type: it can only be blocked.
        return self.settings.org_policy(org_id) or OrgPolicy(id=org_id or "?",
                                                             name=org_id or "?",
                                                             type="nonprofit")

    def evaluate(self, c: Classification, channel: str, address: str, *,
                 region: str | None = None, at: datetime | None = None) -> Decision:
        """The decision alone, recorded nowhere (for `gateway check`: `region` as if the
        person's region were that, `at` as if it were then)."""
        return self.assess(c, channel, address, region=region, at=at)[0]

    def assess(self, c: Classification, channel: str, address: str, *,
               region: str | None = None, at: datetime | None = None
               ) -> tuple[Decision, int | None]:
        """`evaluate`, and for a decision that allows and cannot lapse with time, how many
        opt-out rows (opt-outs and opt-ins) of this person and org it saw: with this
        service's `incarnation`, what `still_allows` later checks."""
        return self._decide_on(c, channel, address,
                               self.ledger.history(c.org, channel, address,
                                                   self.suppression.of(channel, address)),
                               region=region, at=at)

    async def aassess(self, c: Classification, channel: str, address: str
                      ) -> tuple[Decision, int | None]:
        """`assess` from the event loop (on PostgreSQL the read does not hold it)."""
        return self._decide_on(c, channel, address,
                               await self.ledger.ahistory(
                                   c.org, channel, address,
                                   self.suppression.of(channel, address)))

    def _decide_on(self, c: Classification, channel: str, address: str,
                   history: tuple[tuple[Evidence, ...], tuple[OptOut, ...]], *,
                   region: str | None = None, at: datetime | None = None
                   ) -> tuple[Decision, int | None]:
        """The decision on this person's records. A timeless one is kept on the records
        (`History.kept`): decided for again on the very same records (the ledger's cache
        hands out the same object while nothing of theirs changed), the same decision is
        made now, without running the rules."""
        evidence, optouts = history
        key = None
        if region is None and at is None and isinstance(history, History):
            key = (self.incarnation, c, channel)
            kept = history.kept.get(key)
            if kept is not None:
                return kept[0].made_at(datetime.now(UTC)), kept[1]
        org = self.org_policy(c.org)
        ctx = MessageContext(org=org, channel=channel, purpose=c.purpose, nature=c.nature,
                             category=c.category, address=address,
                             **({"now": at} if at is not None else {}))
        choice = self.ruleset_choice(c.org, channel, address, evidence, ctx.now, region)
        decision = decide(ctx, evidence, optouts, choice.ruleset, choice.region,
                          choice.region_source)
        timeless = self.timeless(c.org)
        seen = (sum(1 for o in optouts if o.kind != ERASED_KIND)
                if decision.allowed and timeless else None)
        if key is not None and timeless and _settled(evidence, ctx.now):
            history.kept[key] = (decision, seen)
        return decision, seen

    def ruleset_choice(self, org_id: str, channel: str, address: str, evidence,
                       now: datetime, region: str | None = None) -> RulesetChoice:
        """The rule set for this recipient (docs/rulesets.md): the org's `rulesets` by the
        person's region, or `[gateway] ruleset` for an org that maps none (a region
        given by `gateway check --region` is still named, though it changes nothing)."""
        fallback = self.settings.gateway.ruleset
        org = self.settings.orgs.get(org_id)
        if org is None or not org.rulesets:
            return RulesetChoice(fallback, *((region.upper(), "given") if region else ()))
        return choose(org.rulesets, fallback, evidence=evidence, channel=channel,
                      address=address, default_region=org.default_region, now=now,
                      given=region)

    def timeless(self, org_id: str) -> bool:
        """Whether an allow for this org can only be undone by a new opt-out row: no age
        limits, no rule set with windows or quiet hours, and one rule set for everyone
        (new evidence naming a region could otherwise move the person to another)."""
        found = self._timeless.get(org_id)
        if found is None:
            org = self.org_policy(org_id)
            reachable = self.settings.reachable_rulesets.get(
                org_id, frozenset({self.settings.gateway.ruleset}))
            found = self._timeless[org_id] = (
                not (org.soft_opt_in_max_age_days or org.indirect_consent_max_age_days)
                and len(reachable) == 1 and not any(get_ruleset(r).lapses for r in reachable))
        return found

    def still_allows(self, org: str, address: str, incarnation: str | None,
                     optouts_seen: int | None, channel: str = "email") -> bool:
        """Whether a decision `assess` made (here, `optouts_seen` rows) must still allow,
        decided with one count instead of the whole decision. It must when this service
        made it (same settings, rule set and mode), the person has the same opt-out rows
        and has never been erased: but for erasure the ledger is append-only and evidence
        added since can only allow more. An erasure deletes rows (the count could come
        out the same), so any erasure of the person means: decide again in full, as does
        False."""
        if incarnation != self.incarnation or optouts_seen is None:
            return False
        count, erasures = self.ledger.opt_out_state(org, address,
                                                    self.suppression.of(channel, address))
        return count == optouts_seen and erasures == 0

    def decide(self, c: Classification, channel: str, address: str,
               message_id: str | None = None) -> Verdict:
        """Decide and record."""
        return self.record(c, channel, address, self.evaluate(c, channel, address), message_id)

    async def adecide(self, c: Classification, channel: str, address: str,
                      message_id: str | None = None) -> Verdict:
        """`decide` from the event loop: the lookup without a thread (`aassess`), the
        record through the writer (batched with other requests' writes)."""
        decision = (await self.aassess(c, channel, address))[0]
        return await self.arecord(c, channel, address, decision, message_id)

    def entry(self, c: Classification, channel: str, address: str, decision: Decision,
              message_id: str | None = None) -> tuple[Decision, DecisionRecord]:
        """A decision made by `evaluate` as the ledger records it (see `Writes`)."""
        return decision, DecisionRecord(
            org=c.org, channel=channel, address=address, stream=c.stream, purpose=c.purpose,
            nature=c.nature, category=c.category, message_id=message_id,
            mode=self.settings.gateway.mode)

    def verdict(self, decision: Decision, decision_id: int) -> Verdict:
        """In monitor mode a block is recorded as would_block and delivered anyway."""
        return Verdict(decision, decision.allowed or self.settings.gateway.monitor,
                       decision_id)

    def record(self, c: Classification, channel: str, address: str, decision: Decision,
               message_id: str | None = None) -> Verdict:
        """Append a decision made by `evaluate` to the audit log."""
        ids = self.ledger.write_batch(
            decisions=[self.entry(c, channel, address, decision, message_id)])
        return self.verdict(decision, ids[0])

    async def arecord(self, c: Classification, channel: str, address: str,
                      decision: Decision, message_id: str | None = None) -> Verdict:
        """`record` from the event loop, through the writer."""
        written = await self.writer.write(
            Writes(decisions=[self.entry(c, channel, address, decision, message_id)]))
        return self.verdict(decision, written.decision_ids[0])

    def still_opted_out(self, record: TokenRecord) -> bool:
        """Does the opt-out a token led to still hold? False once the person has opted in
        again (or given new consent): then an old link must work once more."""
        c = Classification(org=record.org, stream=record.stream, purpose="marketing",
                           nature="commercial", category=None)
        return self.evaluate(c, record.channel, record.address).reason == reasons.OPTED_OUT
