"""Properties of the rules engine that must hold for any history (docs/rules.md).

Histories are drawn from small pools (two orgs' records, both channels, categories the
org knows and one it does not, dates either side of the uk-pecr-2026 charity date) so
that the interesting interactions come up often.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy import (
    ALL_CHANNELS,
    ALL_ORGS,
    BASES,
    CHANNELS,
    COLLECTORS,
    CONTEXTS,
    NATURES,
    RULESETS,
    Evidence,
    MessageContext,
    OptOut,
    OrgPolicy,
    decide,
    reasons,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HORIZON_MINUTES = 800 * 24 * 60  # histories reach back about 800 days, before 2026-02-05

SETTINGS = settings(max_examples=200, deadline=None)

GARDEN = frozenset({"lawnmower", "hedge_trimmer", "decking"})
CATEGORIES = ("lawnmower", "hedge_trimmer", "decking", "car_insurance", "barbecue")

orgs = st.builds(
    OrgPolicy,
    id=st.just("acme"),
    name=st.just("Acme Garden Ltd"),
    type=st.sampled_from(("commercial", "charity", "political", "nonprofit")),
    similar=st.sampled_from(((GARDEN,), (), (GARDEN, frozenset({"car_insurance", "decking"})))),
    known_categories=st.sampled_from((frozenset(), frozenset({"car_insurance"}))),
    soft_opt_in_max_age_days=st.sampled_from((0, 30, 365)),
    indirect_consent_max_age_days=st.sampled_from((0, 30, 180)),
)

#: Mostly a few shared instants (so records tie and interleave with opt-outs), sometimes any.
COMMON_MOMENTS = tuple(
    NOW - timedelta(days=d) for d in (0, 1, 10, 30, 31, 180, 181, 365, 366, 400, 700)
)
moments = st.one_of(
    st.sampled_from(COMMON_MOMENTS),
    st.integers(0, HORIZON_MINUTES).map(lambda m: NOW - timedelta(minutes=m)),
)
some_categories = st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True).map(tuple)


@st.composite
def contexts(draw, purpose=None) -> MessageContext:
    purpose = purpose if purpose is not None else st.just("marketing")
    return MessageContext(
        org=draw(orgs),
        channel=draw(st.sampled_from(CHANNELS)),
        purpose=draw(purpose),
        nature=draw(st.sampled_from(NATURES)),
        category=draw(st.sampled_from((None, *CATEGORIES))),
        now=NOW,
    )


def _evidence(i: int, fields: dict) -> Evidence:
    return Evidence(id=f"e{i}", address="pat@example.org", **fields)


evidence_fields = st.fixed_dictionaries({
    "org": st.sampled_from(("acme", "acme", "acme", "bloom")),
    "channel": st.sampled_from(CHANNELS),
    "basis": st.sampled_from(BASES),
    "obtained_at": moments,
    "categories": some_categories,
    "context": st.sampled_from((None, *CONTEXTS)),
    "collected_by": st.sampled_from(COLLECTORS),
    "opt_out_offered": st.sampled_from((True, True, False, None)),
    "named_orgs": st.lists(
        st.sampled_from(("acme", "ACME", "Acme Garden Ltd", "Bloom Ltd", "selected partners")),
        max_size=2,
    ).map(tuple),
})
#: A record may be stored twice under two ids (the same form imported twice): such twins
#: tie on every field but the id, which is what the engine must break ties on.
histories = st.lists(st.tuples(evidence_fields, st.integers(1, 2)), max_size=5).map(
    lambda drawn: tuple(
        _evidence(i, f) for i, f in enumerate(f for f, copies in drawn for _ in range(copies))
    )
)

optout_fields = st.fixed_dictionaries({
    "org": st.sampled_from(("acme", "bloom", ALL_ORGS)),
    "channel": st.sampled_from((*CHANNELS, ALL_CHANNELS)),
    "at": st.one_of(st.sampled_from(COMMON_MOMENTS[:4]), moments),
    "kind": st.sampled_from(("optout", "optin")),
})
#: Opt-outs may come twice at the same instant by two means (a link click and a reply).
optout_lists = st.lists(st.tuples(optout_fields, st.integers(1, 2)), max_size=4).map(
    lambda drawn: tuple(
        OptOut(id=f"o{i}", address="pat@example.org", method=method, **f)
        for i, (f, method) in enumerate(
            (f, method) for f, copies in drawn for method in ("link", "reply")[:copies]
        )
    )
)
rulesets = st.sampled_from(sorted(RULESETS))


def _latest(evidence: tuple[Evidence, ...], optouts: tuple[OptOut, ...]) -> datetime:
    times = [e.obtained_at for e in evidence] + [o.at for o in optouts]
    return max(times, default=NOW - timedelta(days=1))


@SETTINGS
@given(ctx=contexts(), evidence=histories, optouts=optout_lists, ruleset=rulesets, data=st.data())
def test_a_covering_opt_out_after_everything_always_blocks_marketing(
    ctx, evidence, optouts, ruleset, data
):
    stop = OptOut(
        id="stop",
        org=data.draw(st.sampled_from((ctx.org.id, ALL_ORGS)), label="opt-out org"),
        channel=data.draw(st.sampled_from((ctx.channel, ALL_CHANNELS)), label="opt-out channel"),
        address="pat@example.org",
        at=_latest(evidence, optouts) + timedelta(minutes=data.draw(st.integers(1, 600))),
        kind="optout",
    )
    decision = decide(ctx, evidence, (*optouts, stop), ruleset=ruleset)
    assert not decision.allowed
    assert decision.reason == reasons.OPTED_OUT


@SETTINGS
@given(ctx=contexts(purpose=st.just("service")), evidence=histories, optouts=optout_lists,
       ruleset=rulesets)
def test_a_service_message_is_always_allowed(ctx, evidence, optouts, ruleset):
    decision = decide(ctx, evidence, optouts, ruleset=ruleset)
    assert decision.allowed
    assert decision.reason == reasons.SERVICE_MESSAGE
    assert not decision.needs_opt_out


@SETTINGS
@given(ctx=contexts(), evidence=histories, optouts=optout_lists, ruleset=rulesets,
       extra=optout_fields.map(lambda f: OptOut(id="extra", address="pat@example.org",
                                                **{**f, "kind": "optout"})))
def test_adding_an_opt_out_never_turns_a_block_into_an_allow(
    ctx, evidence, optouts, ruleset, extra
):
    before = decide(ctx, evidence, optouts, ruleset=ruleset)
    after = decide(ctx, evidence, (*optouts, extra), ruleset=ruleset)
    if not before.allowed:
        assert not after.allowed, (before, after)


@SETTINGS
@given(ctx=contexts(purpose=st.sampled_from(("marketing", "service"))), evidence=histories,
       optouts=optout_lists, ruleset=rulesets, data=st.data())
def test_the_decision_does_not_depend_on_record_order(ctx, evidence, optouts, ruleset, data):
    given_order = decide(ctx, evidence, optouts, ruleset=ruleset)
    shuffled_evidence = data.draw(st.permutations(evidence), label="evidence order")
    shuffled_optouts = data.draw(st.permutations(optouts), label="opt-out order")
    assert decide(ctx, shuffled_evidence, shuffled_optouts, ruleset=ruleset) == given_order
    # Reversed, every tie (twin records) is met the other way round too.
    assert decide(ctx, evidence[::-1], optouts[::-1], ruleset=ruleset) == given_order


@SETTINGS
@given(ctx=contexts(purpose=st.sampled_from(("marketing", "service", "unclassified"))),
       evidence=histories, optouts=optout_lists, ruleset=rulesets)
def test_the_reason_is_always_a_known_code_that_agrees_with_the_outcome(
    ctx, evidence, optouts, ruleset
):
    decision = decide(ctx, evidence, optouts, ruleset=ruleset)
    assert decision.reason in reasons.ALL
    assert decision.allowed is (decision.reason in reasons.ALLOWING)
    assert decision.ruleset == ruleset
    assert decision.explanation
    if decision.reason in (reasons.CONSENT, reasons.CORPORATE_SUBSCRIBER, reasons.SOFT_OPT_IN):
        relied_on = {e.id: e for e in evidence}[decision.evidence_id]
        assert relied_on.org == ctx.org.id and relied_on.channel == ctx.channel


@SETTINGS
@given(ctx=contexts(), evidence=histories, optouts=optout_lists)
def test_uk_pecr_is_the_strictest_and_only_charities_differ_in_2026(ctx, evidence, optouts):
    strict = decide(ctx, evidence, optouts, ruleset="uk-pecr")
    lenient = decide(ctx, evidence, optouts, ruleset="uk-pecr-2026")
    if strict.allowed:
        assert lenient.allowed
    if ctx.org.type != "charity":
        assert (strict.allowed, strict.reason, strict.evidence_id) == (
            lenient.allowed, lenient.reason, lenient.evidence_id
        )


@SETTINGS
@given(ctx=contexts(purpose=st.sampled_from(("marketing", "service"))), evidence=histories,
       optouts=optout_lists, ruleset=rulesets)
def test_the_decision_is_the_tables_row_stamped_with_rule_set_and_time(
        ctx, evidence, optouts, ruleset):
    """`decide` builds its answer field by field (not with dataclasses.replace): every
    field of the row the table found is kept, only rule set and decision time added."""
    from dataclasses import replace

    from gateway.policy.rulesets import _decide, get_ruleset

    found = _decide(ctx, evidence, optouts, get_ruleset(ruleset))
    made = decide(ctx, evidence, optouts, ruleset)
    expected = replace(found, ruleset=ruleset, decided_at=ctx.now)
    assert made == expected
    assert made.decided_at == ctx.now


@SETTINGS
@given(ctx=contexts(purpose=st.sampled_from(("marketing", "service"))), evidence=histories,
       optouts=optout_lists,
       ruleset=st.sampled_from(sorted(r for r in RULESETS if not RULESETS[r].lapses)),
       later=st.integers(1, 3 * 365 * 24 * 60).map(lambda m: timedelta(minutes=m)))
def test_without_age_limits_or_lapsing_rules_a_decision_on_past_records_never_changes_with_time(
        ctx, evidence, optouts, ruleset, later):
    """What the consent service's kept decisions rest on (ConsentService.timeless): for
    an org with no age limits, under a rule set that does not lapse, the decision on
    records all dated before the message is the same at any later time."""
    from dataclasses import replace

    org = replace(ctx.org, soft_opt_in_max_age_days=0, indirect_consent_max_age_days=0)
    now = replace(ctx, org=org)
    then = replace(now, now=ctx.now + later)
    first, second = decide(now, evidence, optouts, ruleset), decide(then, evidence, optouts,
                                                                    ruleset)
    assert first == second  # every field but the time it was made
    assert second.decided_at == then.now
