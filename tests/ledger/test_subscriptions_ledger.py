"""What migration 0007 adds to the ledger, on both backends: category-scoped opt-outs,
the sign-ups of the double opt-in, and `confirmed_at` on evidence."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from gateway.ledger import open_ledger
from gateway.policy import Evidence

ADDRESS = "jane.doe@example.com"
WHEN = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def ledger(tmp_path, ledger_url):
    book = open_ledger(ledger_url, tmp_path / "data")
    yield book
    book.close()


def sign_up(ledger, id: str = "ab12", **over) -> dict:
    row = {"id": id, "org": "acme", "channel": "email", "address": ADDRESS,
           "source": "form v3", "wording": "Yes please", "categories": json.dumps(["decking"]),
           "region": "DE", "requested_at": WHEN.isoformat(), "requested_by": "192.0.2.1",
           "sent_at": WHEN.isoformat(), "message_id": None, **over}
    ledger.add_subscription(row)
    return row


def confirmed(at: datetime = WHEN) -> Evidence:
    return Evidence(id="", org="acme", channel="email", address=ADDRESS, basis="consent",
                    obtained_at=at, source="form v3 (double opt-in ab12)",
                    categories=("decking",), confirmed_at=at)


def test_a_scoped_opt_out_comes_back_with_its_categories(ledger):
    ledger.record_opt_out("acme", "email", ADDRESS, method="preference",
                          categories=("decking", "fencing"))
    [history_row] = ledger.history("acme", "email", ADDRESS)[1]
    [listed] = ledger.opt_outs_for(ADDRESS, "acme")
    assert history_row.categories == listed.categories == ("decking", "fencing")


def test_an_opt_out_without_categories_is_of_the_whole_channel(ledger):
    ledger.record_opt_out("acme", "email", ADDRESS)
    [row] = ledger.history("acme", "email", ADDRESS)[1]
    assert row.categories == ()
    assert ledger.trail(ADDRESS)["opt_outs"][0]["categories"] == []


def test_a_tokens_unsubscribe_is_never_its_category_opt_out(ledger):
    ledger.record_opt_out("acme", "email", ADDRESS, token="t1", categories=("decking",))
    assert ledger.opt_out_for_token("t1") is None
    ledger.record_opt_out("acme", "email", ADDRESS, token="t1")
    assert json.loads(ledger.opt_out_for_token("t1")["categories"]) == []


def test_confirmed_at_is_kept_on_evidence_and_read_back(ledger):
    evidence_id = ledger.record_evidence(confirmed())
    [record] = ledger.history("acme", "email", ADDRESS)[0]
    assert record.id == str(evidence_id) and record.confirmed_at == WHEN
    assert ledger.trail(ADDRESS)["evidence"][0]["confirmed_at"] == WHEN.isoformat()


def test_evidence_from_elsewhere_has_no_confirmed_at(ledger):
    ledger.record_evidence(Evidence(id="", org="acme", channel="email", address=ADDRESS,
                                    basis="consent", obtained_at=WHEN))
    assert ledger.history("acme", "email", ADDRESS)[0][0].confirmed_at is None


def test_a_sign_up_is_kept_with_what_it_asked_for(ledger):
    sign_up(ledger)
    row = ledger.subscription("ab12")
    assert (row["categories"], row["region"], row["confirmed_at"]) == (["decking"], "DE", None)
    assert ledger.subscriptions_for(ADDRESS, "acme") == [row]
    assert ledger.evidence_for(ADDRESS) == ()  # pending is not evidence


def test_confirming_appends_the_consent_and_marks_the_sign_up(ledger):
    sign_up(ledger)
    evidence_id = ledger.confirm_subscription("ab12", confirmed(), confirmed_ip="192.0.2.7",
                                              confirmed_user_agent="UA/1", confirmed_via="link")
    row = ledger.subscription("ab12")
    assert row["evidence_id"] == str(evidence_id) and row["confirmed_at"] == WHEN.isoformat()
    assert (row["confirmed_ip"], row["confirmed_user_agent"]) == ("192.0.2.7", "UA/1")
    [record] = ledger.evidence_for(ADDRESS)
    assert record.basis == "consent" and record.confirmed_at == WHEN


def test_a_sign_up_is_confirmed_once(ledger):
    sign_up(ledger)
    assert ledger.confirm_subscription("ab12", confirmed(), confirmed_ip=None,
                                       confirmed_user_agent=None, confirmed_via="link")
    assert ledger.confirm_subscription("ab12", confirmed(), confirmed_ip=None,
                                       confirmed_user_agent=None, confirmed_via="link") is None
    assert len(ledger.evidence_for(ADDRESS)) == 1


def test_confirmations_sent_count_every_org_of_the_address(ledger):
    sign_up(ledger, "a1")
    sign_up(ledger, "a2", org="owls")
    sign_up(ledger, "a3", sent_at=None)  # throttled: never sent
    assert {r["id"] for r in ledger.confirmations_sent(ADDRESS, "2026-03-01T00:00:00")} == {
        "a1", "a2"}
    assert ledger.confirmations_sent(ADDRESS, "2026-03-02T00:00:00") == []
