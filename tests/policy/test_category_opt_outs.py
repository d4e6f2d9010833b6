"""rules.md step 2, scoped: an opt-out from the preference centre blocks marketing in its
categories only (reason `opted_out`), as the pure rules decide it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.policy import Evidence, MessageContext, OptOut, OrgPolicy, decide, reasons
from gateway.policy.rules import opted_out_of_category

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GARDEN = ("lawnmowers", "hedge-trimmers", "garden-tools")
ACME = OrgPolicy(id="acme", name="Acme Garden Ltd", type="commercial",
                 similar=(frozenset(GARDEN), frozenset({"decking", "fencing"})))


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def msg(category: str | None, channel: str = "email") -> MessageContext:
    return MessageContext(org=ACME, channel=channel, category=category, now=NOW)


def consent(days: float = 30, categories: tuple[str, ...] = (), channel: str = "email",
            id: str = "c1") -> Evidence:
    return Evidence(id=id, org="acme", channel=channel, address="a@x.test", basis="consent",
                    obtained_at=ago(days), categories=categories)


def soft_opt_in(categories: tuple[str, ...]) -> Evidence:
    return Evidence(id="s1", org="acme", channel="email", address="a@x.test",
                    basis="soft_opt_in", obtained_at=ago(40), categories=categories,
                    context="sale", opt_out_offered=True)


def left(categories: tuple[str, ...] = GARDEN, days: float = 10, channel: str = "email",
         kind: str = "optout", id: str = "o1", org: str = "acme") -> OptOut:
    return OptOut(id=id, org=org, channel=channel, address="a@x.test", at=ago(days),
                  kind=kind, method="preference", categories=categories)


def test_a_category_opt_out_blocks_a_message_in_that_category_as_opted_out():
    d = decide(msg("hedge-trimmers"), [consent()], [left()])
    assert (d.allowed, d.reason) == (False, reasons.OPTED_OUT)
    assert "hedge-trimmers" in d.explanation


def test_a_category_opt_out_leaves_a_consent_for_other_categories_allowing():
    assert decide(msg("decking"), [consent()], [left()]).reason == reasons.CONSENT


def test_a_category_opt_out_leaves_a_soft_opt_in_for_other_categories_allowing():
    d = decide(msg("fencing"), [soft_opt_in(("decking", "lawnmowers"))], [left()])
    assert d.reason == reasons.SOFT_OPT_IN


def test_a_message_without_a_category_is_not_in_a_left_category():
    assert opted_out_of_category(msg(None), (left(),), (consent(),)) is None


def test_a_category_opt_out_of_another_channel_does_not_block():
    assert decide(msg("lawnmowers"), [consent()], [left(channel="sms")]).reason == \
        reasons.CONSENT


def test_a_category_opt_out_of_all_channels_blocks_every_channel():
    sms = decide(msg("lawnmowers", "sms"), [consent(channel="sms")], [left(channel="all")])
    assert sms.reason == reasons.OPTED_OUT


def test_a_later_consent_covering_the_category_lifts_it():
    d = decide(msg("lawnmowers"), [consent(days=30), consent(days=2, id="c2")], [left()])
    assert (d.allowed, d.reason, d.evidence_id) == (True, reasons.CONSENT, "c2")


def test_a_later_consent_scoped_to_other_categories_does_not_lift_it():
    d = decide(msg("lawnmowers"), [consent(), consent(days=2, categories=("decking",),
                                                      id="c2")], [left()])
    assert d.reason == reasons.OPTED_OUT


def test_a_later_opt_in_of_the_channel_lifts_it():
    d = decide(msg("lawnmowers"), [consent()], [left(), left((), days=1, kind="optin",
                                                              id="o2")])
    assert d.reason == reasons.CONSENT


def test_an_unscoped_opt_out_still_blocks_every_category():
    d = decide(msg("decking"), [consent()], [left(()), left()])
    assert d.reason == reasons.OPTED_OUT and "category" not in d.explanation


def test_a_category_opt_out_does_not_void_evidence_for_other_categories():
    # Records before an unscoped opt-out are refused by it; a scoped one refuses nothing.
    assert decide(msg("decking"), [consent(days=300)], [left(days=1)]).reason == \
        reasons.CONSENT


def test_a_category_opt_out_for_every_org_blocks_too():
    assert decide(msg("garden-tools"), [consent()], [left(org="*")]).reason == \
        reasons.OPTED_OUT


def test_service_messages_still_pass():
    d = decide(MessageContext(org=ACME, channel="email", purpose="service",
                              category="lawnmowers", now=NOW), [], [left()])
    assert d.reason == reasons.SERVICE_MESSAGE


def test_a_left_category_written_in_other_case_or_with_spaces_is_still_left():
    for category in ("Decking", " FENCING "):
        decision = decide(msg(category), [consent()], [left(("decking", "fencing"))])
        assert decision.reason == reasons.OPTED_OUT
