"""The rule sets beyond the UK (docs/rulesets.md), row by row.

Each row of each table failing (or applying) alone, the windows at their boundaries (CASL
730/731 days after a sale, 183/184 after an enquiry, an ongoing relationship ended 729 and
731 days ago; Australia one-off, ongoing, ended) and a worked example per rule set. Every
case runs at one fixed `NOW`, a Monday noon in New York (so US texts are inside the hours).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from gateway.policy import Evidence, MessageContext, OptOut, OrgPolicy, decide, reasons
from gateway.policy.rules import SUPPRESSION_ROWS, opted_out

NOW = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)  # Monday 12:00 in New York
GARDEN = frozenset({"lawnmower", "hedge_trimmer"})
ACME = OrgPolicy(id="acme", name="Acme Garden Ltd", type="commercial", similar=(GARDEN,),
                 known_categories=frozenset({"car_insurance"}))
OWLS = OrgPolicy(id="owls", name="Save the Owls", type="charity")
NY = "+12125550100"


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def msg(org: OrgPolicy = ACME, channel: str = "email", *, purpose: str = "marketing",
        nature: str = "commercial", category: str | None = "hedge_trimmer",
        address: str = "pat@example.org") -> MessageContext:
    if channel == "sms" and address == "pat@example.org":
        address = NY
    return MessageContext(org=org, channel=channel, purpose=purpose, nature=nature,
                          category=category, now=NOW, address=address)


def text(**kw) -> MessageContext:
    return msg(channel="sms", **kw)


def record(basis: str, id: str | None = None, *, org: str = "acme", channel: str = "email",
           days: float = 30, **fields) -> Evidence:
    return Evidence(id=id or basis, org=org, channel=channel, address="pat@example.org",
                    basis=basis, obtained_at=ago(days), source="test", **fields)


def soft(id: str = "soft", **fields) -> Evidence:
    """A soft opt-in / relationship record meeting every UK condition unless told otherwise."""
    base = {"categories": ("lawnmower",), "context": "sale", "opt_out_offered": True}
    return record("soft_opt_in", id, **{**base, **fields})


def consent(id: str = "consent", **fields) -> Evidence:
    return record("consent", id, **fields)


def corporate(**fields) -> Evidence:
    return record("corporate_subscriber", "corp", **fields)


def out(days: float = 10, channel: str = "email") -> OptOut:
    return OptOut(id="out", org="acme", channel=channel, address="pat@example.org",
                  at=ago(days), kind="optout", method="link")


@dataclass(frozen=True)
class Case:
    ruleset: str
    ctx: MessageContext
    evidence: tuple[Evidence, ...]
    reason: str
    optouts: tuple[OptOut, ...] = ()


def case(sentence: str, ruleset: str, ctx: MessageContext, evidence, reason: str, optouts=()):
    return pytest.param(Case(ruleset, ctx, tuple(evidence), reason, tuple(optouts)),
                        id=sentence)


def shared_rows(ruleset: str, evidence) -> list:
    """Steps 1 and 2, the same in every rule set."""
    return [
        case(f"{ruleset} step 1: a service message is allowed with nothing recorded", ruleset,
             msg(purpose="service"), [], reasons.SERVICE_MESSAGE),
        case(f"{ruleset} step 2: an opt-out after what would allow blocks", ruleset,
             msg(), evidence, reasons.OPTED_OUT, optouts=[out(days=1)]),
        case(f"{ruleset} step 2: a soft opt-in after an opt-out does not lift it", ruleset,
             msg(), [soft(days=1)], reasons.OPTED_OUT, optouts=[out(days=10)]),
    ]


CONFIRMED = {"confirmed_at": ago(29)}

EU_EPRIVACY = shared_rows("eu-eprivacy", [consent()]) + [
    case("eu-eprivacy step 3: a specific consent allows", "eu-eprivacy", msg(), [consent()],
         reasons.CONSENT),
    case("eu-eprivacy step 3: third-party consent not naming the org blocks", "eu-eprivacy",
         msg(), [consent(collected_by="third_party", named_orgs=("Bloom",))],
         reasons.THIRD_PARTY_UNNAMED),
    case("eu-eprivacy step 4: a corporate subscriber record alone blocks", "eu-eprivacy",
         msg(), [corporate()], reasons.CORPORATE_SUBSCRIBER_NOT_EXEMPT),
    case("eu-eprivacy step 5: a charity's soft opt-in blocks", "eu-eprivacy",
         msg(org=OWLS, category=None), [soft(org="owls")], reasons.SOFT_OPT_IN_NOT_COMMERCIAL),
    case("eu-eprivacy step 6: soft opt-in details from a third party block", "eu-eprivacy",
         msg(), [soft(collected_by="third_party")], reasons.SOFT_OPT_IN_THIRD_PARTY),
    case("eu-eprivacy step 7: a negotiation is not a sale", "eu-eprivacy", msg(),
         [soft(context="negotiation")], reasons.SOFT_OPT_IN_NO_SALE),
    case("eu-eprivacy step 7: an enquiry is not a sale", "eu-eprivacy", msg(),
         [soft(context="enquiry")], reasons.SOFT_OPT_IN_NO_SALE),
    case("eu-eprivacy step 8: no opt-out offered at collection blocks", "eu-eprivacy", msg(),
         [soft(opt_out_offered=False)], reasons.SOFT_OPT_IN_NO_OPT_OUT_OFFERED),
    case("eu-eprivacy step 9: a product not similar blocks", "eu-eprivacy",
         msg(category="car_insurance"), [soft()], reasons.SOFT_OPT_IN_NOT_SIMILAR),
    case("eu-eprivacy step 10: older than the org's limit blocks", "eu-eprivacy",
         msg(org=OrgPolicy(id="acme", name="Acme", similar=(GARDEN,),
                           soft_opt_in_max_age_days=365)),
         [soft(days=366)], reasons.SOFT_OPT_IN_EXPIRED),
    case("eu-eprivacy step 11: a sale with every condition allows", "eu-eprivacy", msg(),
         [soft()], reasons.SOFT_OPT_IN),
    case("eu-eprivacy step 11: a sale allows a text too", "eu-eprivacy", text(),
         [soft(channel="sms")], reasons.SOFT_OPT_IN),
    case("eu-eprivacy step 12: nothing recorded blocks", "eu-eprivacy", msg(), [],
         reasons.NO_CONSENT),
]

EU_DE = shared_rows("eu-de", [consent(**CONFIRMED)]) + [
    case("eu-de step 3: a consent confirmed by double opt-in allows", "eu-de", msg(),
         [consent(**CONFIRMED)], reasons.CONSENT),
    case("eu-de step 3: an unconfirmed consent blocks", "eu-de", msg(), [consent()],
         reasons.CONSENT_UNCONFIRMED),
    case("eu-de step 3: a confirmation dated before the consent does not count", "eu-de",
         msg(), [consent(confirmed_at=ago(31))], reasons.CONSENT_UNCONFIRMED),
    case("eu-de step 4: a corporate subscriber record alone blocks", "eu-de", msg(),
         [corporate()], reasons.CORPORATE_SUBSCRIBER_NOT_EXEMPT),
    case("eu-de step 7: a negotiation is not a sale", "eu-de", msg(),
         [soft(context="negotiation")], reasons.SOFT_OPT_IN_NO_SALE),
    case("eu-de after step 8: a text on a soft opt-in blocks", "eu-de", text(),
         [soft(channel="sms")], reasons.SOFT_OPT_IN_CHANNEL),
    case("eu-de step 11: an email on a soft opt-in allows", "eu-de", msg(), [soft()],
         reasons.SOFT_OPT_IN),
    case("eu-de step 12: nothing recorded blocks", "eu-de", msg(), [], reasons.NO_CONSENT),
]

EU_FR = shared_rows("eu-fr", [consent()]) + [
    case("eu-fr step 3: consent of 1,095 days ago still allows", "eu-fr", msg(),
         [consent(days=1095)], reasons.CONSENT),
    case("eu-fr step 3: consent of 1,096 days ago has expired", "eu-fr", msg(),
         [consent(days=1096)], reasons.CONSENT_EXPIRED),
    case("eu-fr step 4: a corporate subscriber record allows", "eu-fr", msg(),
         [corporate()], reasons.CORPORATE_SUBSCRIBER),
    case("eu-fr step 7: an enquiry is not a sale", "eu-fr", msg(), [soft(context="enquiry")],
         reasons.SOFT_OPT_IN_NO_SALE),
    case("eu-fr step 11: a sale allows", "eu-fr", msg(), [soft()], reasons.SOFT_OPT_IN),
    case("eu-fr step 12: nothing recorded blocks", "eu-fr", msg(), [], reasons.NO_CONSENT),
]

CA_CASL = shared_rows("ca-casl", [consent()]) + [
    case("ca-casl step 3: express consent of ten years ago still allows", "ca-casl", msg(),
         [consent(days=3650)], reasons.CONSENT),
    case("ca-casl step 3: third-party consent not naming the org blocks", "ca-casl", msg(),
         [consent(collected_by="third_party", named_orgs=("Bloom",))],
         reasons.THIRD_PARTY_UNNAMED),
    case("ca-casl step 4: a corporate subscriber record alone blocks", "ca-casl", msg(),
         [corporate()], reasons.CORPORATE_SUBSCRIBER_NOT_EXEMPT),
    case("ca-casl step 5: a relationship record from a third party blocks", "ca-casl", msg(),
         [soft(collected_by="third_party")], reasons.SOFT_OPT_IN_THIRD_PARTY),
    case("ca-casl step 6: a sale 730 days ago allows", "ca-casl", msg(), [soft(days=730)],
         reasons.IMPLIED_PURCHASE),
    case("ca-casl step 6: a sale needs no similarity nor opt-out offer", "ca-casl",
         msg(category="car_insurance"), [soft(opt_out_offered=False)],
         reasons.IMPLIED_PURCHASE),
    case("ca-casl step 6: an ongoing contract still running allows after 5 years",
         "ca-casl", msg(), [soft(days=1825, relationship="ongoing")],
         reasons.IMPLIED_PURCHASE),
    case("ca-casl step 6: an ongoing contract ended 729 days ago allows", "ca-casl", msg(),
         [soft(days=1825, relationship="ongoing", relationship_ended_at=ago(729))],
         reasons.IMPLIED_PURCHASE),
    case("ca-casl step 7: an enquiry 183 days ago allows", "ca-casl", msg(),
         [soft(days=183, context="enquiry")], reasons.IMPLIED_ENQUIRY),
    case("ca-casl step 7: a negotiation 10 days ago allows", "ca-casl", msg(),
         [soft(days=10, context="negotiation")], reasons.IMPLIED_ENQUIRY),
    case("ca-casl step 8: a charity's donor of a year ago allows", "ca-casl",
         msg(org=OWLS, category=None), [soft(org="owls", days=365, context="support")],
         reasons.IMPLIED_NONBUSINESS),
    case("ca-casl step 9: a sale 731 days ago has expired", "ca-casl", msg(),
         [soft(days=731)], reasons.IMPLIED_EXPIRED),
    case("ca-casl step 9: an ongoing contract ended 731 days ago has expired", "ca-casl",
         msg(), [soft(days=1825, relationship="ongoing", relationship_ended_at=ago(731))],
         reasons.IMPLIED_EXPIRED),
    case("ca-casl step 9: an enquiry 184 days ago has expired", "ca-casl", msg(),
         [soft(days=184, context="enquiry")], reasons.IMPLIED_EXPIRED),
    case("ca-casl step 9: a charity's donor of 731 days ago has expired", "ca-casl",
         msg(org=OWLS, category=None), [soft(org="owls", days=731, context="support")],
         reasons.IMPLIED_EXPIRED),
    case("ca-casl step 10: a general interest gives no implied consent", "ca-casl", msg(),
         [soft(context="interest")], reasons.NO_CONSENT),
    case("ca-casl step 10: a company's supporter gives no implied consent", "ca-casl", msg(),
         [soft(context="support")], reasons.NO_CONSENT),
    case("ca-casl step 10: nothing recorded blocks", "ca-casl", msg(), [], reasons.NO_CONSENT),
]

WRITTEN = {"written": True}
US = shared_rows("us", [consent()]) + [
    case("us email step 2: an opt-out blocks even with nothing else recorded", "us", msg(),
         [], reasons.OPTED_OUT, optouts=[out()]),
    case("us email step 3: a specific consent allows", "us", msg(), [consent()],
         reasons.CONSENT),
    case("us email step 4: anyone not opted out may be emailed", "us", msg(), [],
         reasons.NOT_OPTED_OUT),
    case("us email step 4: a soft opt-in is no consent, but the email may go", "us", msg(),
         [soft()], reasons.NOT_OPTED_OUT),
    case("us text step 2: an opt-out blocks a written consent", "us", text(),
         [consent(channel="sms", **WRITTEN)], reasons.OPTED_OUT,
         optouts=[out(channel="sms", days=1)]),
    case("us text step 3: an unwritten consent blocks", "us", text(),
         [consent(channel="sms")], reasons.NO_WRITTEN_CONSENT),
    case("us text step 3: an existing customer without written consent blocks", "us", text(),
         [soft(channel="sms")], reasons.NO_WRITTEN_CONSENT),
    case("us text step 3: written consent at a third party not naming the org blocks", "us",
         text(), [consent(channel="sms", collected_by="third_party", named_orgs=("Bloom",),
                          **WRITTEN)], reasons.NO_WRITTEN_CONSENT),
    case("us text step 4: at 22:00 in New York the text is deferred", "us",
         MessageContext(org=ACME, channel="sms", now=datetime(2026, 6, 2, 2, 0, tzinfo=UTC),
                        address=NY), [consent(channel="sms", **WRITTEN)],
         reasons.QUIET_HOURS),
    case("us text step 5: written consent inside the hours allows", "us", text(),
         [consent(channel="sms", **WRITTEN)], reasons.CONSENT),
    case("us text step 5: written consent at a third party naming the org allows", "us",
         text(), [consent(channel="sms", collected_by="third_party",
                          named_orgs=("Acme Garden Ltd",), **WRITTEN)], reasons.CONSENT),
]

ONGOING = {"relationship": "ongoing"}
AU_SPAM = shared_rows("au-spam", [consent()]) + [
    case("au-spam step 3: a charity about its own goods is a designated sender", "au-spam",
         msg(org=OWLS, category=None), [], reasons.DESIGNATED_SENDER),
    case("au-spam step 3: a charity's campaigning is not designated", "au-spam",
         msg(org=OWLS, category=None, nature="campaigning"), [], reasons.NO_CONSENT),
    case("au-spam step 4: express consent allows", "au-spam", msg(), [consent()],
         reasons.CONSENT),
    case("au-spam step 4: third-party consent not naming the org blocks", "au-spam", msg(),
         [consent(collected_by="third_party", named_orgs=("Bloom",))],
         reasons.THIRD_PARTY_UNNAMED),
    case("au-spam step 5: a corporate subscriber record alone blocks", "au-spam", msg(),
         [corporate()], reasons.CORPORATE_SUBSCRIBER_NOT_EXEMPT),
    case("au-spam step 6: a relationship record from a third party blocks", "au-spam", msg(),
         [soft(collected_by="third_party", **ONGOING)], reasons.SOFT_OPT_IN_THIRD_PARTY),
    case("au-spam step 7: a one-off sale infers no consent", "au-spam", msg(), [soft()],
         reasons.INFERRED_CONSENT_INSUFFICIENT),
    case("au-spam step 7: an ongoing relationship that has ended infers no consent",
         "au-spam", msg(), [soft(relationship_ended_at=ago(1), **ONGOING)],
         reasons.INFERRED_CONSENT_INSUFFICIENT),
    case("au-spam step 8: an ongoing relationship, similar products, allows", "au-spam",
         msg(), [soft(days=2000, **ONGOING)], reasons.INFERRED_CONSENT),
    case("au-spam step 9: an ongoing relationship, products not similar, blocks", "au-spam",
         msg(category="car_insurance"), [soft(**ONGOING)], reasons.SOFT_OPT_IN_NOT_SIMILAR),
    case("au-spam step 10: nothing recorded blocks", "au-spam", msg(), [], reasons.NO_CONSENT),
]

#: One worked example per rule set, in the style of rules.md's: the same person, a customer
#: who asked Acme for a quote 100 days ago (opt-out offered), emailed about hedge trimmers.
ENQUIRY = [soft(days=100, context="negotiation")]
WORKED = [
    case("worked: a quote request gives a soft opt-in in the UK", "uk-pecr", msg(), ENQUIRY,
         reasons.SOFT_OPT_IN),
    case("worked: a quote request is no sale in the EU", "eu-eprivacy", msg(), ENQUIRY,
         reasons.SOFT_OPT_IN_NO_SALE),
    case("worked: a quote request is no sale in Germany", "eu-de", msg(), ENQUIRY,
         reasons.SOFT_OPT_IN_NO_SALE),
    case("worked: a quote request is no sale in France", "eu-fr", msg(), ENQUIRY,
         reasons.SOFT_OPT_IN_NO_SALE),
    case("worked: a quote request implies consent for 6 months in Canada", "ca-casl", msg(),
         ENQUIRY, reasons.IMPLIED_ENQUIRY),
    case("worked: in the US the email goes as an advertisement", "us", msg(), ENQUIRY,
         reasons.NOT_OPTED_OUT),
    case("worked: in Australia a one-off quote infers nothing", "au-spam", msg(), ENQUIRY,
         reasons.INFERRED_CONSENT_INSUFFICIENT),
]

CASES = EU_EPRIVACY + EU_DE + EU_FR + CA_CASL + US + AU_SPAM + WORKED


@pytest.mark.parametrize("c", CASES)
def test_rule_set_table(c: Case) -> None:
    decision = decide(c.ctx, c.evidence, c.optouts, ruleset=c.ruleset)
    assert decision.reason == c.reason, decision.explanation
    assert decision.allowed is (c.reason in reasons.ALLOWING)
    assert decision.ruleset == c.ruleset
    assert decision.explanation
    assert (decision.outcome == "defer") is (c.reason == reasons.QUIET_HOURS)


def test_every_new_reason_code_has_a_case_and_a_meaning() -> None:
    covered = {p.values[0].reason for p in CASES}
    assert set(reasons.RULESET_CODES) <= covered
    assert set(reasons.MEANING) == set(reasons.ALL)
    assert all("\n" not in line and line for line in reasons.MEANING.values())


def test_case_ids_are_unique() -> None:
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids))


def test_every_rule_set_runs_the_one_shared_list_of_suppression_rows() -> None:
    """A row added to SUPPRESSION_ROWS (an erasure, say) reaches every rule set."""
    from gateway.policy import RULESETS
    from gateway.policy.model import Decision

    def held(ctx, optouts, history):
        return Decision(False, reasons.OPTED_OUT, "held by a test row")

    SUPPRESSION_ROWS.append(held)
    try:
        for name in RULESETS:
            for ctx in (msg(), text()):
                decision = decide(ctx, [consent(channel=ctx.channel, **WRITTEN, **CONFIRMED)],
                                  ruleset=name)
                assert decision.explanation == "held by a test row", name
    finally:
        SUPPRESSION_ROWS.remove(held)
    assert held not in SUPPRESSION_ROWS and opted_out in SUPPRESSION_ROWS


def test_a_deferred_text_says_when_it_will_be_sent() -> None:
    late = MessageContext(org=ACME, channel="sms", now=datetime(2026, 6, 2, 2, 0, tzinfo=UTC),
                          address=NY)
    decision = decide(late, [consent(channel="sms", **WRITTEN)], ruleset="us")
    assert decision.send_at == datetime(2026, 6, 2, 12, 0, tzinfo=UTC)  # 08:00 in New York
    assert not decision.allowed


def test_an_eu_de_block_says_whether_the_consent_was_never_confirmed_or_confirmed_too_early():
    never = decide(msg(), [consent()], (), "eu-de")
    early = decide(msg(), [consent(confirmed_at=ago(31))], (), "eu-de")
    assert "never confirmed by double opt-in" in never.explanation
    assert "confirmation dated before it was obtained" in early.explanation
