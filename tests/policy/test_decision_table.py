"""The decision table of docs/rules.md, case by case.

One case per row of the table, one per worked example, and the edges the table implies:
each soft opt-in condition failing alone, indirect consent, opt-out scope and lifting,
expiry at the limit and one day past it, several records, and the uk-pecr-2026 rule set.
Every case runs at the same fixed, timezone-aware `NOW`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.policy import Evidence, MessageContext, OptOut, OrgPolicy, decide, reasons

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

# --- organisations ----------------------------------------------------------------------

GARDEN = frozenset({"lawnmower", "hedge_trimmer", "decking"})

#: A commercial specialist garden shop: garden goods are similar to one another, car
#: insurance is a category it knows but is similar to nothing it sells.
ACME = OrgPolicy(
    id="acme",
    name="Acme Garden Ltd",
    type="commercial",
    similar=(GARDEN,),
    known_categories=frozenset({"car_insurance"}),
    soft_opt_in_max_age_days=365,
    indirect_consent_max_age_days=180,
)
#: Same shop with no age limits configured (0 = none).
ACME_NO_LIMITS = OrgPolicy(
    id="acme", name="Acme Garden Ltd", type="commercial", similar=(GARDEN,),
    known_categories=frozenset({"car_insurance"}),
)
OWLS = OrgPolicy(id="owls", name="Save the Owls", type="charity")
PARTY = OrgPolicy(id="party", name="Owl Party", type="political")
CLUB = OrgPolicy(id="club", name="Owl Watchers Club", type="nonprofit")

CHARITY_DAY = datetime(2026, 2, 5, tzinfo=UTC)  # uk-pecr-2026 charity soft opt-in starts


# --- builders -----------------------------------------------------------------------------


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def msg(org: OrgPolicy = ACME, channel: str = "email", *, purpose: str = "marketing",
        nature: str = "commercial", category: str | None = "hedge_trimmer") -> MessageContext:
    return MessageContext(org=org, channel=channel, purpose=purpose, nature=nature,
                          category=category, now=NOW)


def soft(id: str = "soft", *, org: str = "acme", channel: str = "email",
         at: datetime | None = None, days: float = 30, categories: tuple[str, ...] = ("lawnmower",),
         context: str | None = "sale", collected_by: str = "self",
         opt_out_offered: bool | None = True, source: str = "checkout") -> Evidence:
    """A soft opt-in record that meets every condition unless told otherwise."""
    return Evidence(
        id=id, org=org, channel=channel, address="pat@example.org", basis="soft_opt_in",
        obtained_at=at or ago(days), source=source, categories=categories, context=context,
        collected_by=collected_by, opt_out_offered=opt_out_offered,
    )


def consent(id: str = "consent", *, org: str = "acme", channel: str = "email",
            at: datetime | None = None, days: float = 30, categories: tuple[str, ...] = (),
            source: str = "signup form") -> Evidence:
    """Specific consent given directly to the org."""
    return Evidence(
        id=id, org=org, channel=channel, address="pat@example.org", basis="consent",
        obtained_at=at or ago(days), source=source, categories=categories, collected_by="self",
    )


def indirect(id: str = "indirect", *, named: tuple[str, ...], org: str = "acme",
             channel: str = "email", days: float = 30, categories: tuple[str, ...] = (),
             source: str = "bloom.example signup") -> Evidence:
    """Consent collected by a third party, naming `named`."""
    return Evidence(
        id=id, org=org, channel=channel, address="pat@example.org", basis="consent",
        obtained_at=ago(days), source=source, categories=categories,
        collected_by="third_party", named_orgs=named,
    )


def corporate(id: str = "corp", *, org: str = "acme", channel: str = "email",
              days: float = 30) -> Evidence:
    return Evidence(
        id=id, org=org, channel=channel, address="buyer@bigcorp.example",
        basis="corporate_subscriber", obtained_at=ago(days), source="sales team: Companies House",
    )


def out(id: str = "out", *, org: str = "acme", channel: str = "email", days: float = 10,
        method: str = "link") -> OptOut:
    return OptOut(id=id, org=org, channel=channel, address="pat@example.org", at=ago(days),
                  kind="optout", method=method)


def optin(id: str = "optin", *, org: str = "acme", channel: str = "email",
          days: float = 5) -> OptOut:
    return OptOut(id=id, org=org, channel=channel, address="pat@example.org", at=ago(days),
                  kind="optin", method="preference centre")


def erasure(id: str = "erasure", *, org: str = "acme", channel: str = "email",
            days: float = 10) -> OptOut:
    """An erasure's suppression entry, as the ledger hands it to the rules."""
    return OptOut(id=id, org=org, channel=channel, address="", at=ago(days), kind="erased",
                  source="request by letter")


@dataclass(frozen=True)
class Case:
    ctx: MessageContext
    evidence: tuple[Evidence, ...]
    reason: str
    optouts: tuple[OptOut, ...] = ()
    ruleset: str = "uk-pecr"
    evidence_id: str | None = None  # checked only when given


def case(sentence: str, ctx: MessageContext, evidence, reason: str, optouts=(),
         ruleset: str = "uk-pecr", evidence_id: str | None = None, marks=()):
    return pytest.param(
        Case(ctx, tuple(evidence), reason, tuple(optouts), ruleset, evidence_id),
        id=sentence, marks=marks,
    )


# --- the cases ------------------------------------------------------------------------------

TABLE_ROWS = [
    case("row 1: a service message is allowed with nothing recorded",
         msg(purpose="service", category=None), [], reasons.SERVICE_MESSAGE),
    case("row 2: an opt-out after a valid soft opt-in blocks",
         msg(), [soft()], reasons.OPTED_OUT, optouts=[out()]),
    case("row 3: specific consent given directly to the org allows",
         msg(), [consent()], reasons.CONSENT, evidence_id="consent"),
    case("row 3b: an address recorded as a corporate subscriber's allows",
         msg(category="decking"), [corporate()], reasons.CORPORATE_SUBSCRIBER,
         evidence_id="corp"),
    case("row 4: indirect consent that does not name the org blocks",
         msg(), [indirect(named=("Bloom Ltd",))], reasons.THIRD_PARTY_UNNAMED),
    case("row 4b: indirect consent naming the org but older than its limit blocks",
         msg(), [indirect(named=("Acme",), days=400)], reasons.CONSENT_EXPIRED),
    case("row 5: a soft opt-in for a campaigning message blocks",
         msg(nature="campaigning"), [soft()], reasons.SOFT_OPT_IN_NOT_COMMERCIAL),
    case("row 6: a soft opt-in whose details came from a third party blocks",
         msg(), [soft(collected_by="third_party")], reasons.SOFT_OPT_IN_THIRD_PARTY),
    case("row 7: a soft opt-in not obtained in a sale or negotiation blocks",
         msg(), [soft(context="enquiry")], reasons.SOFT_OPT_IN_NO_SALE),
    case("row 8: a soft opt-in where no opt-out was offered at collection blocks",
         msg(), [soft(opt_out_offered=False)], reasons.SOFT_OPT_IN_NO_OPT_OUT_OFFERED),
    case("row 9: a soft opt-in for a dissimilar category blocks",
         msg(category="car_insurance"), [soft()], reasons.SOFT_OPT_IN_NOT_SIMILAR),
    case("row 10: a soft opt-in older than the org's limit blocks",
         msg(), [soft(days=500)], reasons.SOFT_OPT_IN_EXPIRED),
    case("row 11: a soft opt-in meeting every condition allows",
         msg(), [soft()], reasons.SOFT_OPT_IN, evidence_id="soft"),
    case("row 12: nothing recorded blocks",
         msg(), [], reasons.NO_CONSENT),
    case("fail closed: a message of unknown purpose is treated as marketing",
         msg(purpose="unclassified"), [], reasons.NO_CONSENT),
    case("fail closed: a message of unknown purpose is blocked by an opt-out",
         msg(purpose="unclassified"), [soft()], reasons.OPTED_OUT, optouts=[out()]),
]

WORKED_EXAMPLES = [
    case("example: lawnmower buyer gets the hedge trimmer email",
         msg(category="hedge_trimmer"), [soft(categories=("lawnmower",))], reasons.SOFT_OPT_IN),
    case("example: lawnmower buyer does not get the car insurance email",
         msg(category="car_insurance"), [soft(categories=("lawnmower",))],
         reasons.SOFT_OPT_IN_NOT_SIMILAR),
    case("example: a decking quote with an opt-out on the form allows a decking text",
         msg(channel="sms", category="decking"),
         [soft(channel="sms", context="negotiation", categories=("decking",),
               source="quote form")],
         reasons.SOFT_OPT_IN),
    case("example: a question about opening hours is not a negotiation",
         msg(category="decking"), [soft(context="enquiry", categories=())],
         reasons.SOFT_OPT_IN_NO_SALE),
    case("example: a list bought from a broker never gives a soft opt-in",
         msg(), [soft(collected_by="third_party", source="broker list")],
         reasons.SOFT_OPT_IN_THIRD_PARTY),
    case("example: consent on Bloom's site naming Acme and Bloom allows Acme",
         msg(), [indirect(named=("Acme", "Bloom Ltd"))], reasons.CONSENT,
         evidence_id="indirect"),
    case("example: consent to offers from selected partners does not allow Acme",
         msg(), [indirect(named=("selected partners",), source="broker site")],
         reasons.THIRD_PARTY_UNNAMED),
    case("example: a donor to Save the Owls does not get a fundraising email by soft opt-in",
         msg(OWLS, nature="campaigning", category=None),
         [soft(org="owls", context="support", categories=())],
         reasons.SOFT_OPT_IN_NOT_COMMERCIAL),
    case("example: specific consent to Save the Owls allows its campaign email",
         msg(OWLS, nature="campaigning", category=None), [consent(org="owls")], reasons.CONSENT),
    case("example: an Acme buyer who clicked unsubscribe gets no Acme marketing email",
         msg(category="decking"), [soft()], reasons.OPTED_OUT,
         optouts=[out(channel="email", method="link")]),
    case("example: an Acme buyer who replied STOP gets no Acme marketing text",
         msg(channel="sms"), [soft(channel="sms")], reasons.OPTED_OUT,
         optouts=[out(channel="sms", method="STOP")]),
    case("example: a STOP reply by text does not stop Acme email",
         msg(channel="email"), [soft(id="soft-email"), soft(id="soft-sms", channel="sms")],
         reasons.SOFT_OPT_IN, optouts=[out(channel="sms", method="STOP")],
         evidence_id="soft-email"),
    case("example: anyone gets the Acme password reset email",
         msg(purpose="service", category=None), [], reasons.SERVICE_MESSAGE),
    case("example: a BigCorp buyer's work address recorded as corporate gets the decking email",
         msg(category="decking"), [corporate()], reasons.CORPORATE_SUBSCRIBER),
    case("example: a sole trader with nothing recorded gets no marketing email",
         msg(), [], reasons.NO_CONSENT),
]

SOFT_OPT_IN_CONDITIONS = [
    case("soft opt-in: a commercial org's commercial message is allowed (baseline)",
         msg(), [soft()], reasons.SOFT_OPT_IN),
    case("soft opt-in: only the sender not being commercial fails",
         msg(OWLS, category="hedge_trimmer"),
         [soft(org="owls")], reasons.SOFT_OPT_IN_NOT_COMMERCIAL),
    case("soft opt-in: only the message being campaigning fails",
         msg(nature="campaigning"), [soft()], reasons.SOFT_OPT_IN_NOT_COMMERCIAL),
    case("soft opt-in: only the details coming from a third party fails",
         msg(), [soft(collected_by="third_party")], reasons.SOFT_OPT_IN_THIRD_PARTY),
    case("soft opt-in: only the context being a general enquiry fails",
         msg(), [soft(context="enquiry")], reasons.SOFT_OPT_IN_NO_SALE),
    case("soft opt-in: only the context being unrecorded fails",
         msg(), [soft(context=None)], reasons.SOFT_OPT_IN_NO_SALE),
    case("soft opt-in: a negotiation without a purchase is enough",
         msg(), [soft(context="negotiation")], reasons.SOFT_OPT_IN),
    case("soft opt-in: only the opt-out offer being refused at collection fails",
         msg(), [soft(opt_out_offered=False)], reasons.SOFT_OPT_IN_NO_OPT_OUT_OFFERED),
    case("soft opt-in: only the opt-out offer being unrecorded fails",
         msg(), [soft(opt_out_offered=None)], reasons.SOFT_OPT_IN_NO_OPT_OUT_OFFERED),
    case("soft opt-in: only the category being dissimilar fails",
         msg(category="car_insurance"), [soft()], reasons.SOFT_OPT_IN_NOT_SIMILAR),
    case("soft opt-in: the same category bought is similar",
         msg(category="lawnmower"), [soft()], reasons.SOFT_OPT_IN),
    case("soft opt-in: a message with no category is similar to nothing",
         msg(category=None), [soft()], reasons.SOFT_OPT_IN_NOT_SIMILAR),
    case("soft opt-in: a category the org does not know is similar to nothing, even itself",
         msg(category="barbecue"), [soft(categories=("barbecue",))],
         reasons.SOFT_OPT_IN_NOT_SIMILAR),
    case("soft opt-in: a record with no categories is similar to nothing",
         msg(), [soft(categories=())], reasons.SOFT_OPT_IN_NOT_SIMILAR),
    case("soft opt-in: only the record being past the org's limit fails",
         msg(), [soft(days=366)], reasons.SOFT_OPT_IN_EXPIRED),
    case("soft opt-in: a sister company's record gives the org nothing",
         msg(), [soft(org="acme-hire")], reasons.NO_CONSENT),
    case("soft opt-in: an email record gives nothing for a text",
         msg(channel="sms"), [soft(channel="email")], reasons.NO_CONSENT),
]

INDIRECT_CONSENT = [
    case("indirect consent naming the org by id allows",
         msg(), [indirect(named=("acme",))], reasons.CONSENT),
    case("indirect consent naming the org by id in another case allows",
         msg(), [indirect(named=("ACME",))], reasons.CONSENT),
    case("indirect consent naming the org by name in another case allows",
         msg(), [indirect(named=("  acme GARDEN ltd ",))], reasons.CONSENT),
    case("indirect consent naming only another org blocks",
         msg(), [indirect(named=("Bloom Ltd",))], reasons.THIRD_PARTY_UNNAMED),
    case("indirect consent naming nobody blocks",
         msg(), [indirect(named=())], reasons.THIRD_PARTY_UNNAMED),
    case("indirect consent to Selected Partners in capitals blocks",
         msg(), [indirect(named=("Selected Partners",))], reasons.THIRD_PARTY_UNNAMED),
    case("indirect consent naming a name that only contains the org's id blocks",
         msg(), [indirect(named=("Acme Partners Group",))], reasons.THIRD_PARTY_UNNAMED),
    case("indirect consent exactly at the org's limit still allows",
         msg(), [indirect(named=("acme",), days=180)], reasons.CONSENT),
    case("indirect consent one day past the org's limit blocks",
         msg(), [indirect(named=("acme",), days=181)], reasons.CONSENT_EXPIRED),
    case("indirect consent of any age allows when the org sets no limit",
         msg(ACME_NO_LIMITS), [indirect(named=("acme",), days=3000)], reasons.CONSENT),
    case("unnamed indirect consent blocks whatever its age",
         msg(), [indirect(named=("Bloom Ltd",), days=400)], reasons.THIRD_PARTY_UNNAMED),
]

CONSENT_SCOPE = [
    case("consent scoped to decking allows a decking message",
         msg(category="decking"), [consent(categories=("decking",))], reasons.CONSENT),
    case("consent scoped to decking does not cover a similar hedge trimmer message",
         msg(category="hedge_trimmer"), [consent(categories=("decking",))], reasons.NO_CONSENT),
    case("consent scoped to decking does not cover a message with no category",
         msg(category=None), [consent(categories=("decking",))], reasons.NO_CONSENT),
    case("unscoped consent covers any category",
         msg(category="car_insurance"), [consent()], reasons.CONSENT),
    case("consent to email does not cover texts",
         msg(channel="sms"), [consent(channel="email")], reasons.NO_CONSENT),
    case("named indirect consent scoped to decking does not cover hedge trimmers",
         msg(category="hedge_trimmer"), [indirect(named=("acme",), categories=("decking",))],
         reasons.NO_CONSENT),
]

ORG_TYPES = [
    case("a charity never gets a soft opt-in under uk-pecr, even for a commercial message",
         msg(OWLS, category=None), [soft(org="owls", context="sale", categories=())],
         reasons.SOFT_OPT_IN_NOT_COMMERCIAL),
    case("a political party never gets a soft opt-in",
         msg(PARTY, nature="campaigning", category=None),
         [soft(org="party", context="support", categories=())],
         reasons.SOFT_OPT_IN_NOT_COMMERCIAL),
    case("a not-for-profit never gets a soft opt-in",
         msg(CLUB, category=None), [soft(org="club", categories=())],
         reasons.SOFT_OPT_IN_NOT_COMMERCIAL),
    case("a political party with specific consent may campaign",
         msg(PARTY, nature="campaigning", category=None), [consent(org="party")],
         reasons.CONSENT),
    case("a commercial org's campaigning message needs consent, not a soft opt-in",
         msg(nature="campaigning"), [soft(), consent(categories=())], reasons.CONSENT),
]

OPT_OUTS = [
    case("an opt-out blocks earlier specific consent",
         msg(), [consent(days=30)], reasons.OPTED_OUT, optouts=[out(days=10)]),
    case("an opt-out blocks a corporate subscriber record",
         msg(), [corporate(days=30)], reasons.OPTED_OUT, optouts=[out(days=10)]),
    case("an opt-out then a later opt-in event lets a newer soft opt-in through",
         msg(), [soft(days=8)], reasons.SOFT_OPT_IN,
         optouts=[out(days=10), optin(days=5)], evidence_id="soft"),
    case("an opt-out still blocks a newer soft opt-in without an opt-in event",
         msg(), [soft(days=8)], reasons.OPTED_OUT, optouts=[out(days=10)]),
    case("an opt-out then an opt-in event does not revive evidence from before the opt-out",
         msg(), [soft(days=30)], reasons.NO_CONSENT, optouts=[out(days=10), optin(days=5)]),
    case("an opt-out then new specific consent to the org allows",
         msg(), [soft(days=30), consent(days=5)], reasons.CONSENT, optouts=[out(days=10)],
         evidence_id="consent"),
    case("an opt-in event before the opt-out does not lift it",
         msg(), [soft(days=30)], reasons.OPTED_OUT, optouts=[optin(days=20), out(days=10)]),
    case("specific consent before the opt-out does not lift it",
         msg(), [consent(days=20)], reasons.OPTED_OUT, optouts=[out(days=10)]),
    case("new indirect consent naming the org does not lift an opt-out",
         msg(), [indirect(named=("acme",), days=5)], reasons.OPTED_OUT, optouts=[out(days=10)]),
    case("new specific consent to text does not lift an email opt-out",
         msg(), [consent(channel="sms", days=5)], reasons.OPTED_OUT, optouts=[out(days=10)]),
    case("an opt-in event for texts does not lift an email opt-out",
         msg(), [soft(days=8)], reasons.OPTED_OUT,
         optouts=[out(days=10), optin(channel="sms", days=5)]),
    case("a second opt-out after the opt-in event blocks again",
         msg(), [soft(days=8)], reasons.OPTED_OUT,
         optouts=[out("out1", days=10), optin(days=5), out("out2", days=2)]),
    case("STOPALL (org *, all channels) blocks Acme email",
         msg(), [soft()], reasons.OPTED_OUT,
         optouts=[out(org="*", channel="all", method="STOPALL")]),
    case("STOPALL by text (org *, sms) blocks Acme texts",
         msg(channel="sms"), [soft(channel="sms")], reasons.OPTED_OUT,
         optouts=[out(org="*", channel="sms", method="STOPALL")]),
    case("an opt-out of all Acme channels blocks email",
         msg(), [soft()], reasons.OPTED_OUT, optouts=[out(channel="all")]),
    case("an sms opt-out does not block email",
         msg(), [soft()], reasons.SOFT_OPT_IN, optouts=[out(channel="sms", method="STOP")]),
    case("an opt-out from another org does not block Acme",
         msg(), [soft()], reasons.SOFT_OPT_IN, optouts=[out(org="bloom", channel="all")]),
    case("an opt-in event at the same instant as the opt-out does not lift it",
         msg(), [soft(days=30)], reasons.OPTED_OUT, optouts=[out(days=10), optin(days=10)]),
    case("an opt-in event alone, with nothing recorded, is not consent",
         msg(), [], reasons.NO_CONSENT, optouts=[optin(days=5)]),
]

EXPIRY = [
    case("soft opt-in exactly at the org's limit still allows",
         msg(), [soft(days=365)], reasons.SOFT_OPT_IN),
    case("soft opt-in one day past the org's limit blocks",
         msg(), [soft(days=366)], reasons.SOFT_OPT_IN_EXPIRED),
    case("soft opt-in one second past the org's limit blocks",
         msg(), [soft(at=NOW - timedelta(days=365, seconds=1))], reasons.SOFT_OPT_IN_EXPIRED),
    case("soft opt-in of any age allows when the org sets no limit",
         msg(ACME_NO_LIMITS), [soft(days=3650)], reasons.SOFT_OPT_IN),
    case("specific consent given directly never expires",
         msg(), [consent(days=3650)], reasons.CONSENT),
]

SEVERAL_RECORDS = [
    case("one valid soft opt-in among failing ones allows",
         msg(), [soft("enquiry", context="enquiry", days=1), soft("good", days=40),
                 soft("broker", collected_by="third_party", days=2)],
         reasons.SOFT_OPT_IN, evidence_id="good"),
    case("direct consent beside unnamed indirect consent allows",
         msg(), [indirect(named=("Bloom Ltd",), days=1), consent(days=60)],
         reasons.CONSENT, evidence_id="consent"),
    case("named indirect consent beside unnamed indirect consent allows",
         msg(), [indirect("unnamed", named=("selected partners",)),
                 indirect("named", named=("acme",))],
         reasons.CONSENT, evidence_id="named"),
    case("of two valid consents the newest is the one relied on",
         msg(), [consent("older", days=90), consent("newer", days=3)], reasons.CONSENT,
         evidence_id="newer"),
    case("an expired soft opt-in beside a fresh one allows",
         msg(), [soft("old", days=500), soft("new", days=10)], reasons.SOFT_OPT_IN,
         evidence_id="new"),
    case("when all block, the most specific row is reported (expired over third party)",
         msg(), [soft("broker", collected_by="third_party"), soft("old", days=500)],
         reasons.SOFT_OPT_IN_EXPIRED, evidence_id="old"),
    case("when all block, a soft opt-in row beats unnamed indirect consent",
         msg(), [indirect(named=("selected partners",)), soft(context="enquiry")],
         reasons.SOFT_OPT_IN_NO_SALE),
    case("when all block, expired indirect consent beats unnamed indirect consent",
         msg(), [indirect("unnamed", named=("Bloom Ltd",)),
                 indirect("stale", named=("acme",), days=400)],
         reasons.CONSENT_EXPIRED, evidence_id="stale"),
    case("when all block, a record failing early does not count at later rows",
         msg(category=None), [soft(context="enquiry"), soft("broker", collected_by="third_party")],
         reasons.SOFT_OPT_IN_NO_SALE),
]

UK_PECR_2026 = [
    case("2026: a charity supporter's details from after 5 Feb 2026 allow a campaign email",
         msg(OWLS, nature="campaigning", category=None),
         [soft(org="owls", context="support", categories=(), at=datetime(2026, 3, 1, tzinfo=UTC))],
         reasons.SOFT_OPT_IN, ruleset="uk-pecr-2026"),
    case("2026: a charity's interested person allows a commercial-nature email",
         msg(OWLS, nature="commercial", category="raffle"),
         [soft(org="owls", context="interest", categories=("owl adoption",),
               at=datetime(2026, 4, 1, tzinfo=UTC))],
         reasons.SOFT_OPT_IN, ruleset="uk-pecr-2026"),
    case("2026: details collected at midnight on 5 Feb 2026 count",
         msg(OWLS, nature="campaigning", category=None),
         [soft(org="owls", context="interest", categories=(), at=CHARITY_DAY)],
         reasons.SOFT_OPT_IN, ruleset="uk-pecr-2026"),
    case("2026: details collected on 4 Feb 2026 stay blocked as not commercial",
         msg(OWLS, nature="campaigning", category=None),
         [soft(org="owls", context="interest", categories=(),
               at=datetime(2026, 2, 4, 23, 59, tzinfo=UTC))],
         reasons.SOFT_OPT_IN_NOT_COMMERCIAL, ruleset="uk-pecr-2026"),
    case("2026: 00:30 on 5 Feb at UTC+1 is still 4 Feb in the UK and stays blocked",
         msg(OWLS, nature="campaigning", category=None),
         [soft(org="owls", context="interest", categories=(),
               at=datetime(2026, 2, 5, 0, 30, tzinfo=timezone(timedelta(hours=1))))],
         reasons.SOFT_OPT_IN_NOT_COMMERCIAL, ruleset="uk-pecr-2026"),
    case("uk-pecr: the same post-Feb-2026 charity supporter stays blocked",
         msg(OWLS, nature="campaigning", category=None),
         [soft(org="owls", context="support", categories=(), at=datetime(2026, 3, 1, tzinfo=UTC))],
         reasons.SOFT_OPT_IN_NOT_COMMERCIAL, ruleset="uk-pecr"),
    case("2026: a political party's supporter never gets a soft opt-in",
         msg(PARTY, nature="campaigning", category=None),
         [soft(org="party", context="support", categories=(), at=datetime(2026, 3, 1, tzinfo=UTC))],
         reasons.SOFT_OPT_IN_NOT_COMMERCIAL, ruleset="uk-pecr-2026"),
    case("2026: a not-for-profit's supporter never gets a soft opt-in",
         msg(CLUB, nature="campaigning", category=None),
         [soft(org="club", context="interest", categories=(), at=datetime(2026, 3, 1, tzinfo=UTC))],
         reasons.SOFT_OPT_IN_NOT_COMMERCIAL, ruleset="uk-pecr-2026"),
    case("2026: a charity's general enquiry is not interest or support",
         msg(OWLS, nature="campaigning", category=None),
         [soft(org="owls", context="enquiry", categories=(), at=datetime(2026, 3, 1, tzinfo=UTC))],
         reasons.SOFT_OPT_IN_NO_SALE, ruleset="uk-pecr-2026"),
    case("2026: a charity's supporter list from a third party blocks",
         msg(OWLS, nature="campaigning", category=None),
         [soft(org="owls", context="support", categories=(), collected_by="third_party",
               at=datetime(2026, 3, 1, tzinfo=UTC))],
         reasons.SOFT_OPT_IN_THIRD_PARTY, ruleset="uk-pecr-2026"),
    case("2026: a charity supporter not offered an opt-out blocks",
         msg(OWLS, nature="campaigning", category=None),
         [soft(org="owls", context="support", categories=(), opt_out_offered=False,
               at=datetime(2026, 3, 1, tzinfo=UTC))],
         reasons.SOFT_OPT_IN_NO_OPT_OUT_OFFERED, ruleset="uk-pecr-2026"),
    case("2026: a commercial org is judged as under uk-pecr (interest is not a sale)",
         msg(), [soft(context="interest", at=datetime(2026, 3, 1, tzinfo=UTC))],
         reasons.SOFT_OPT_IN_NO_SALE, ruleset="uk-pecr-2026"),
    case("2026: a commercial org's dissimilar category still blocks",
         msg(category="car_insurance"), [soft(at=datetime(2026, 3, 1, tzinfo=UTC))],
         reasons.SOFT_OPT_IN_NOT_SIMILAR, ruleset="uk-pecr-2026"),
    case("2026: an opt-out still beats a charity soft opt-in",
         msg(OWLS, nature="campaigning", category=None),
         [soft(org="owls", context="support", categories=(), at=datetime(2026, 3, 1, tzinfo=UTC))],
         reasons.OPTED_OUT, optouts=[out(org="owls", channel="all", days=10)],
         ruleset="uk-pecr-2026"),
]

SERVICE = [
    case("a service message is allowed even after STOPALL on all channels",
         msg(purpose="service", category=None), [soft()], reasons.SERVICE_MESSAGE,
         optouts=[out(org="*", channel="all", method="STOPALL")]),
    case("a service text is allowed even after an Acme sms opt-out",
         msg(channel="sms", purpose="service", category=None), [], reasons.SERVICE_MESSAGE,
         optouts=[out(channel="sms", method="STOP")]),
    case("a service message is allowed under uk-pecr-2026 after an opt-out",
         msg(OWLS, purpose="service", category=None), [], reasons.SERVICE_MESSAGE,
         optouts=[out(org="owls", channel="all")], ruleset="uk-pecr-2026"),
]

ERASURES = [
    case("an erased person is blocked whatever was recorded before the erasure",
         msg(), [soft(days=30), consent(days=20)], reasons.ERASED, optouts=[erasure()]),
    case("an erasure for every org blocks this org",
         msg(), [], reasons.ERASED, optouts=[erasure(org="*")]),
    case("an erasure for another org does not block this org",
         msg(), [consent(days=20)], reasons.CONSENT, optouts=[erasure(org="owls")]),
    case("an erasure of the person's texts does not block email",
         msg(), [consent(days=20)], reasons.CONSENT, optouts=[erasure(channel="sms")]),
    case("new specific consent after the erasure allows again",
         msg(), [consent(days=5)], reasons.CONSENT, optouts=[erasure()],
         evidence_id="consent"),
    case("a new soft opt-in after the erasure does not lift it",
         msg(), [soft(days=5)], reasons.ERASED, optouts=[erasure()]),
    case("a START after the erasure does not lift it",
         msg(channel="sms"), [soft(channel="sms", days=8)], reasons.ERASED,
         optouts=[erasure(channel="sms"), optin(channel="sms", days=5)]),
    case("indirect consent naming the org after the erasure does not lift it",
         msg(), [indirect(named=("acme",), days=5)], reasons.ERASED, optouts=[erasure()]),
    case("consent re-imported with a date before the erasure does not lift it",
         msg(), [consent(days=20)], reasons.ERASED, optouts=[erasure()]),
    case("a service message to an erased person is allowed",
         msg(purpose="service", category=None), [], reasons.SERVICE_MESSAGE,
         optouts=[erasure()]),
    case("an erased person is blocked under uk-pecr-2026 too",
         msg(OWLS), [], reasons.ERASED, optouts=[erasure(org="owls")],
         ruleset="uk-pecr-2026"),
]

CASES = (
    ERASURES + TABLE_ROWS + WORKED_EXAMPLES + SOFT_OPT_IN_CONDITIONS + INDIRECT_CONSENT + CONSENT_SCOPE
    + ORG_TYPES + OPT_OUTS + EXPIRY + SEVERAL_RECORDS + UK_PECR_2026 + SERVICE
)


@pytest.mark.parametrize("c", CASES)
def test_decision_table(c: Case) -> None:
    decision = decide(c.ctx, c.evidence, c.optouts, ruleset=c.ruleset)
    assert decision.reason == c.reason, decision.explanation
    assert decision.allowed is (c.reason in reasons.ALLOWING)
    assert decision.ruleset == c.ruleset
    assert decision.explanation
    if c.evidence_id is not None:
        assert decision.evidence_id == c.evidence_id


def test_every_reason_code_has_a_case() -> None:
    covered = {p.values[0].reason for p in CASES}
    # The codes of the rule sets beyond the UK have their cases in test_rulesets_world.py.
    assert covered == set(reasons.ALL) - set(reasons.RULESET_CODES)


def test_case_ids_are_unique() -> None:
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids))


def test_default_ruleset_is_uk_pecr() -> None:
    assert decide(msg(), [soft()]).ruleset == "uk-pecr"


def test_unknown_ruleset_is_refused() -> None:
    with pytest.raises(KeyError, match="uk-pecr"):
        decide(msg(), [soft()], ruleset="xx-nowhere")


def test_service_message_needs_no_opt_out_but_marketing_does() -> None:
    assert not decide(msg(purpose="service"), []).needs_opt_out
    assert decide(msg(), [soft()]).needs_opt_out
