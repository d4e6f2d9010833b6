"""The consent service keeps a timeless decision with the records it was made on
(ConsentService._decide_on): asked again while the ledger hands out the same records, it
answers the same decision, made now. Anything recorded for the person since (an opt-out,
new evidence, an erasure) is decided on afresh at once, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from gwtest import SOFT_OPT_IN, make_settings

from gateway.consent import ConsentService, classify
from gateway.evidence import parse_evidence
from gateway.ledger import open_ledger
from gateway.policy import reasons

PERSON = "jane@example.com"


@pytest.fixture
def service(tmp_path, ledger_url):
    settings = make_settings(tmp_path, ledger_url=ledger_url)
    ledger = open_ledger(ledger_url, settings.gateway.data_dir, cache=True)  # as a gateway
    yield ConsentService(settings, ledger)
    ledger.close()


def marketing(service, category=None):
    return classify(service.settings.stream("acme-news"), category=category)


def record(service, **fields):
    service.ledger.record_evidence(parse_evidence(
        {"org": "acme", "channel": "email", "address": PERSON,
         "obtained_at": "2026-01-10T10:00:00Z", "source": "test", **fields},
        {"acme": "GB"}))


def test_asked_again_with_nothing_changed_the_same_decision_is_made_now(service):
    record(service, **SOFT_OPT_IN)
    first, seen = service.assess(marketing(service), "email", PERSON)
    second, seen_again = service.assess(marketing(service), "email", PERSON)
    assert second == first and seen_again == seen == 0  # every field but its time
    assert second.allowed and second.decided_at > first.decided_at
    assert second.decided_at <= datetime.now(UTC)
    fresh = ConsentService(service.settings, service.ledger)  # nothing kept: the plain path
    assert fresh.evaluate(marketing(service), "email", PERSON) == second


def test_an_opt_out_recorded_after_a_kept_decision_blocks_the_very_next_one(service):
    record(service, **SOFT_OPT_IN)
    assert service.evaluate(marketing(service), "email", PERSON).allowed
    assert service.evaluate(marketing(service), "email", PERSON).allowed
    service.ledger.record_opt_out("acme", "email", PERSON, source="test", method="link")
    after = service.evaluate(marketing(service), "email", PERSON)
    assert not after.allowed and after.reason == reasons.OPTED_OUT


def test_new_evidence_after_a_kept_block_is_decided_on_at_once(service):
    blocked = service.evaluate(marketing(service), "email", PERSON)
    assert not blocked.allowed and blocked.reason == reasons.NO_CONSENT
    assert service.evaluate(marketing(service), "email", PERSON) == blocked
    record(service, basis="consent")
    assert service.evaluate(marketing(service), "email", PERSON).allowed


def test_an_erasure_after_a_kept_decision_blocks_the_next_one_as_erased(service):
    record(service, **SOFT_OPT_IN)
    assert service.evaluate(marketing(service), "email", PERSON).allowed
    service.ledger.erase("email", PERSON, "acme",
                         service.suppression.of("email", PERSON), source="test")
    after = service.evaluate(marketing(service), "email", PERSON)
    assert not after.allowed and after.reason == reasons.ERASED


def test_each_classification_is_kept_apart(service):
    record(service, basis="consent", categories=["decking"])
    assert service.evaluate(marketing(service, "decking"), "email", PERSON).allowed
    assert not service.evaluate(marketing(service, "lawnmower"), "email", PERSON).allowed
    assert service.evaluate(marketing(service, "decking"), "email", PERSON).allowed
