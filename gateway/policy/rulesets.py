"""Named rule sets and the engine that runs one over a person's history."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import reasons as R
from . import rules, world
from .model import Decision, Evidence, MessageContext, OptOut
from .steps import Step, run_steps

SoftRow = Callable[[MessageContext, Evidence], bool]


@dataclass(frozen=True)
class RuleSet:
    """A named reading of the law: the soft opt-in rows (5–10) in table order."""

    name: str
    description: str
    soft_opt_in_rows: tuple[tuple[str, SoftRow], ...] = ()
    # Rule sets beyond the UK (docs/rulesets.md): the rows after step 2 as an ordered list
    # of steps (gateway/policy/steps.py); `text_steps` where texts have their own table.
    steps: tuple[Step, ...] | None = None
    text_steps: tuple[Step, ...] | None = None
    # Whether an allow can lapse with time alone (windows, quiet hours): a copy waiting in
    # the spool is then always decided again in full.
    lapses: bool = False
    # What every marketing message carries under it (docs/rulesets.md), for the footers.
    identification: str = "uk"

    def steps_for(self, channel: str) -> tuple[Step, ...]:
        if channel == "sms" and self.text_steps is not None:
            return self.text_steps
        return self.steps or ()


UK_PECR = RuleSet(
    name="uk-pecr",
    description="UK PECR as the ICO described the soft opt-in before 2026 (strictest)",
    soft_opt_in_rows=(
        (R.SOFT_OPT_IN_NOT_COMMERCIAL, rules.soft_opt_in_not_commercial),
        (R.SOFT_OPT_IN_THIRD_PARTY, rules.soft_opt_in_third_party),
        (R.SOFT_OPT_IN_NO_SALE, rules.soft_opt_in_no_sale),
        (R.SOFT_OPT_IN_NO_OPT_OUT_OFFERED, rules.soft_opt_in_no_opt_out_offered),
        (R.SOFT_OPT_IN_NOT_SIMILAR, rules.soft_opt_in_not_similar),
        (R.SOFT_OPT_IN_EXPIRED, rules.soft_opt_in_expired),
    ),
)

UK_PECR_2026 = RuleSet(
    name="uk-pecr-2026",
    description="uk-pecr plus the charity soft opt-in of the Data (Use and Access) Act 2025",
    soft_opt_in_rows=(
        (R.SOFT_OPT_IN_NOT_COMMERCIAL, rules.soft_opt_in_not_commercial_2026),
        (R.SOFT_OPT_IN_THIRD_PARTY, rules.soft_opt_in_third_party),
        (R.SOFT_OPT_IN_NO_SALE, rules.soft_opt_in_no_sale_2026),
        (R.SOFT_OPT_IN_NO_OPT_OUT_OFFERED, rules.soft_opt_in_no_opt_out_offered),
        (R.SOFT_OPT_IN_NOT_SIMILAR, rules.soft_opt_in_not_similar_2026),
        (R.SOFT_OPT_IN_EXPIRED, rules.soft_opt_in_expired),
    ),
)

# --- the rule sets beyond the UK (docs/rulesets.md); their rows are in world.py ----------

EU_EPRIVACY = RuleSet(
    name="eu-eprivacy",
    description="EU ePrivacy Directive Art. 13, the strictest common reading",
    steps=world.EU_EPRIVACY, identification="eu")
EU_DE = RuleSet(
    name="eu-de",
    description="Germany (UWG §7): eu-eprivacy, consent only with double opt-in, soft "
    "opt-in for email only",
    steps=world.EU_DE, identification="eu")
EU_FR = RuleSet(
    name="eu-fr",
    description="France (CPCE L34-5, CNIL): eu-eprivacy, corporate subscribers allowed, "
    "consent for 3 years",
    steps=world.EU_FR, lapses=True, identification="eu")
CA_CASL = RuleSet(
    name="ca-casl",
    description="Canada's Anti-Spam Legislation: express consent, or implied consent "
    "within its window",
    steps=world.CA_CASL, lapses=True, identification="ca-casl")
US = RuleSet(
    name="us",
    description="US: CAN-SPAM (email, opt-out) and TCPA (texts: written consent, not at "
    "night)",
    steps=world.US_EMAIL, text_steps=world.US_TEXT, lapses=True, identification="us")
AU_SPAM = RuleSet(
    name="au-spam",
    description="Australia's Spam Act 2003: express consent, or inferred from a current "
    "relationship",
    steps=world.AU_SPAM, lapses=True, identification="au-spam")

RULESETS: dict[str, RuleSet] = {r.name: r for r in (
    UK_PECR, UK_PECR_2026, EU_EPRIVACY, EU_DE, EU_FR, CA_CASL, US, AU_SPAM)}
DEFAULT_RULESET = UK_PECR.name


def get_ruleset(name: str) -> RuleSet:
    """The rule set called `name`; KeyError names the known ones."""
    try:
        return RULESETS[name]
    except KeyError:
        raise KeyError(f"unknown rule set {name!r}; known: {', '.join(RULESETS)}") from None


def decide(
    ctx: MessageContext,
    evidence: Iterable[Evidence],
    optouts: Iterable[OptOut] = (),
    ruleset: str = DEFAULT_RULESET,
    region: str = "",
    region_source: str = "",
) -> Decision:
    """Run the decision table for one recipient. `evidence` and `optouts` are this
    person's records; records of other orgs or channels are ignored, and the result
    does not depend on the order they are given in."""
    rs = get_ruleset(ruleset)
    found = _decide(ctx, evidence, optouts, rs)
    # As dataclasses.replace(found, ruleset=..., decided_at=...) would, without its
    # per-call look at the fields (a decision per message).
    return Decision(found.allowed, found.reason, found.explanation, found.evidence_id,
                    ruleset=rs.name, region=region, region_source=region_source,
                    send_at=found.send_at, decided_at=ctx.now)


def _decide(ctx, evidence, optouts, rs: RuleSet) -> Decision:
    if decision := rules.service_message(ctx):
        return decision
    # Newest first so the record relied on is the most recent one; id breaks ties.
    # Evidence dated after the decision does not exist yet (a mistyped year must not
    # outrank every later opt-out; the ledger refuses such dates, this guards old rows).
    history = tuple(
        sorted(
            (e for e in evidence
             if e.channel == ctx.channel and e.org == ctx.org.id and e.obtained_at <= ctx.now),
            key=lambda e: (e.obtained_at, e.id),
            reverse=True,
        )
    )
    outs = tuple(optouts)
    for suppression in rules.SUPPRESSION_ROWS:
        if decision := suppression(ctx, outs, history):
            return decision
    history = _in_force(ctx, history, outs)
    if rs.steps is not None:
        return run_steps(ctx, history, rs.steps_for(ctx.channel))
    if decision := rules.consent(ctx, history):
        return decision
    if decision := rules.corporate_subscriber(ctx, history):
        return decision
    # From here every row can only block; the last (most specific) block is reported
    # unless a soft opt-in record survives every row.
    blocks = [d for d in (rules.third_party_unnamed(ctx, history),
                          rules.consent_expired(ctx, history)) if d]
    survivors = [e for e in history if e.basis == "soft_opt_in"]
    for reason, row in rs.soft_opt_in_rows:
        failing = [e for e in survivors if row(ctx, e)]
        if failing:
            blocks.append(rules.block(reason, rules.explain_soft(reason, ctx, failing[0]),
                                      failing[0]))
            survivors = [e for e in survivors if e not in failing]
    if decision := rules.soft_opt_in(ctx, survivors):
        return decision
    return blocks[-1] if blocks else rules.no_consent(ctx)


def _in_force(ctx, history: tuple[Evidence, ...], optouts) -> tuple[Evidence, ...]:
    """Records obtained before the latest opt-out were refused by it; once the person has
    opted in again only what was recorded after that opt-out counts."""
    last_out = rules.latest_opt_out(ctx, optouts)
    # Likewise an erasure: what was recorded before it is spent (and mostly deleted).
    cut = max((o.at for o in (last_out, rules.latest_erasure(ctx, optouts)) if o), default=None)
    if cut is None:
        return history
    return tuple(e for e in history if e.obtained_at > cut)
