"""Named rule sets and the engine that runs one over a person's history."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import reasons as R
from . import rules
from .model import Decision, Evidence, MessageContext, OptOut

SoftRow = Callable[[MessageContext, Evidence], bool]


@dataclass(frozen=True)
class RuleSet:
    """A named reading of the law: the soft opt-in rows (5–10) in table order."""

    name: str
    description: str
    soft_opt_in_rows: tuple[tuple[str, SoftRow], ...]


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

RULESETS: dict[str, RuleSet] = {r.name: r for r in (UK_PECR, UK_PECR_2026)}
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
) -> Decision:
    """Run the decision table for one recipient. `evidence` and `optouts` are this
    person's records; records of other orgs or channels are ignored, and the result
    does not depend on the order they are given in."""
    rs = get_ruleset(ruleset)
    found = _decide(ctx, evidence, optouts, rs)
    # As dataclasses.replace(found, ruleset=..., decided_at=...) would, without its
    # per-call look at the fields (a decision per message).
    return Decision(found.allowed, found.reason, found.explanation, found.evidence_id,
                    ruleset=rs.name, decided_at=ctx.now)


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
    if decision := rules.opted_out(ctx, outs, history):
        return decision
    if decision := rules.opted_out_of_category(ctx, outs, history):
        return decision
    history = _in_force(ctx, history, outs)
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
    if last_out is None:
        return history
    return tuple(e for e in history if e.obtained_at > last_out.at)
