"""`gateway demo`, second act: the same people and messages judged under every rule set
(docs/rulesets.md), printed as a table. Their records go into the demo's ledger; each
person's history is read back and decided under each rule set at one fixed moment, 23:00
in New York (so a US text waits for the morning)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .evidence import parse_evidence
from .policy import RULESETS, MessageContext, decide

NOW = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)  # 23:00 on 1 June in New York


def _at(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


SALE = {"basis": "soft_opt_in", "context": "sale", "categories": ["lawnmowers"],
        "opt_out_offered": True, "source": "checkout, opt-out box shown"}

# (who, org, channel, nature, evidence (None: nothing recorded), what it is)
PEOPLE = [
    ("quote@example.com", "acme", "email", "commercial",
     dict(SALE, context="negotiation", obtained_at=_at(100)), "asked for a quote 100 days ago"),
    ("old.buyer@example.com", "acme", "email", "commercial",
     dict(SALE, obtained_at=_at(800)), "bought 800 days ago"),
    ("member@example.com", "acme", "email", "commercial",
     dict(SALE, relationship="ongoing", obtained_at=_at(900)), "ongoing membership"),
    ("purchasing@bigcorp.example", "acme", "email", "commercial",
     {"basis": "corporate_subscriber", "source": "sales team", "obtained_at": _at(30)},
     "corporate subscriber"),
    ("signup@example.com", "acme", "email", "commercial",
     {"basis": "consent", "source": "signup form", "obtained_at": _at(30)},
     "consent, never confirmed"),
    ("supporter@example.com", "owls", "email", "commercial",
     dict(SALE, context="support", categories=["appeal"], obtained_at=_at(200)),
     "donated 200 days ago"),
    ("+12125550100", "acme", "sms", "commercial",
     dict(SALE, obtained_at=_at(30)), "text: bought 30 days ago"),
    ("+12125550101", "acme", "sms", "commercial",
     {"basis": "consent", "written": True, "source": "signed e-consent",
      "obtained_at": _at(30)}, "text: signed written consent"),
]


def judge_everywhere(rt) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Record each person's evidence, then decide for each under every rule set. Returns
    the rule set names and, per person, what they are and one outcome per rule set."""
    regions = {o: "GB" for o in rt.settings.orgs}
    names = list(RULESETS)
    table = []
    for who, org, channel, nature, evidence, what in PEOPLE:
        fields = {"org": org, "channel": channel, "address": who, **evidence}
        rt.ledger.record_evidence(parse_evidence(fields, regions), "demo")
        history, optouts = rt.ledger.history(org, channel, who)
        ctx = MessageContext(org=rt.consent.org_policy(org), channel=channel, nature=nature,
                             category="lawnmowers" if org == "acme" else None, now=NOW,
                             address=who)
        cells = []
        for name in names:
            d = decide(ctx, history, optouts, name)
            cells.append(f"{'DEFER' if d.deferred else 'allow' if d.allowed else 'block'} "
                         f"{d.reason}")
        table.append((what, cells))
    return names, table


def print_table(names: list[str], table: list[tuple[str, list[str]]]) -> set[str]:
    """Print one row per person, one column per rule set; the reason codes shown."""
    print("\nThe same people and messages under every rule set (at 23:00 in New York):\n")
    for what, cells in table:
        print(f"{what}")
        for name, cell in zip(names, cells):
            print(f"    {name:13} {cell}")
    return {cell.split(" ", 1)[1] for _, cells in table for cell in cells}
