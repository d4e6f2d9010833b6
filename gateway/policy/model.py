"""Plain, frozen records the rules work on. No I/O, nothing of ours imported."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

CHANNELS = ("email", "sms")
BASES = ("consent", "soft_opt_in", "corporate_subscriber")
CONTEXTS = ("sale", "negotiation", "enquiry", "interest", "support", "other")
COLLECTORS = ("self", "third_party")
ORG_TYPES = ("commercial", "charity", "political", "nonprofit")
PURPOSES = ("marketing", "service")
NATURES = ("commercial", "campaigning")
ALL_ORGS = "*"  # an opt-out with this org covers every organisation (STOPALL)
ALL_CHANNELS = "all"
# An erasure reaches the rules as an OptOut of this kind (its suppression entry: org scope,
# channel, time, source; no address): see rules.erased.
ERASED_KIND = "erased"
RELATIONSHIPS = ("one_off", "ongoing")


@dataclass(frozen=True)
class Evidence:
    """One evidence record: why the org believes it may market to this address."""

    id: str
    org: str
    channel: str
    address: str
    basis: str
    obtained_at: datetime
    source: str = ""
    categories: tuple[str, ...] = ()
    context: str | None = None
    collected_by: str = "self"
    opt_out_offered: bool | None = None
    named_orgs: tuple[str, ...] = ()
    # Added in 0.3 (docs/rulesets.md); old records keep their meaning with these defaults.
    region: str | None = None
    relationship: str = "one_off"
    relationship_ended_at: datetime | None = None
    written: bool = False
    # When the person confirmed from the address itself (double opt-in); None otherwise.
    confirmed_at: datetime | None = None


@dataclass(frozen=True)
class OptOut:
    """An opt-out (kind "optout") or a later active opt-in (kind "optin") that lifts it; or
    an erasure's suppression entry (kind ERASED_KIND, address "")."""

    id: str
    org: str  # an org id, or ALL_ORGS
    channel: str  # "email", "sms" or ALL_CHANNELS
    address: str
    at: datetime
    kind: str = "optout"
    source: str = ""
    method: str = ""
    # Scoped to these product categories (the preference centre); () is the whole channel.
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class OrgPolicy:
    """What the rules need to know of the sending organisation."""

    id: str
    name: str
    type: str = "commercial"
    similar: tuple[frozenset[str], ...] = ()
    known_categories: frozenset[str] = frozenset()
    soft_opt_in_max_age_days: int = 0
    indirect_consent_max_age_days: int = 0

    def knows(self, category: str | None) -> bool:
        if not category:
            return False
        return category in self.known_categories or any(category in g for g in self.similar)

    def similar_categories(self, a: str | None, b: str | None) -> bool:
        """Equal or in one `similar` group; a category the org does not know matches nothing."""
        if not (self.knows(a) and self.knows(b)):
            return False
        return a == b or any(a in g and b in g for g in self.similar)

    def is_named(self, names: tuple[str, ...]) -> bool:
        wanted = {self.id.casefold(), self.name.casefold()} - {""}
        return any(n.strip().casefold() in wanted for n in names)


@dataclass(frozen=True)
class MessageContext:
    """What is being sent, by whom, to which channel, and when."""

    org: OrgPolicy
    channel: str
    purpose: str = "marketing"
    nature: str = "commercial"
    category: str | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # The recipient's normalised address: the quiet-hours row reads a number's time zones.
    address: str = ""


@dataclass(frozen=True)
class Decision:
    """The outcome for one recipient: allowed or not, why, and the record relied on."""

    allowed: bool
    reason: str
    explanation: str
    evidence_id: str | None = None
    ruleset: str = ""
    # Where the rule set came from: the recipient's region and how it was found
    # (evidence, number, default, given); "" when the org maps no regions.
    region: str = ""
    region_source: str = ""
    # A deferral (reason quiet_hours): not allowed now, sent at send_at.
    send_at: datetime | None = None
    # When it was decided: the context's `now`, taken before the person's records were
    # read. The audit log records this, not the (later) time the record was written, so
    # an opt-out that arrived meanwhile shows as after the decision, as it was.
    decided_at: datetime | None = field(default=None, compare=False)

    def made_at(self, when: datetime) -> Decision:
        """The same decision, made at `when` (as `dataclasses.replace` would, cheaper)."""
        return Decision(self.allowed, self.reason, self.explanation, self.evidence_id,
                        self.ruleset, self.region, self.region_source, self.send_at, when)

    @property
    def outcome(self) -> str:
        if self.send_at is not None:
            return "defer"
        return "allowed" if self.allowed else "blocked"

    @property
    def deferred(self) -> bool:
        return self.send_at is not None

    @property
    def needs_opt_out(self) -> bool:
        """Every allowed message except a service message carries an opt-out."""
        return self.reason != "service_message"
