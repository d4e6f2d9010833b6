"""The ledger's part in opt-outs that arrive from elsewhere, on both backends: an event is
kept once per provider and event id, and a webhook nonce is accepted once."""

from __future__ import annotations

import pytest

from gateway.ledger import open_ledger
from gateway.ledger.queries import OPTOUT_EVENT_COLUMNS


@pytest.fixture
def ledger(tmp_path, ledger_url):
    book = open_ledger(ledger_url, tmp_path)
    yield book
    book.close()


def event(**over) -> dict:
    row = dict.fromkeys(OPTOUT_EVENT_COLUMNS)
    row.update(provider="sendgrid", event_id="sg-1", event_type="spamreport",
               received_at="2026-12-02T04:00:00.000000+00:00", method="complaint",
               outcome="recorded", org="acme", stream="acme-news",
               address="jane@example.com", problem="", payload="{}")
    row.update(over)
    return row


def test_an_event_is_kept_once_per_provider_and_event_id(ledger):
    assert ledger.record_optout_event(event())
    assert not ledger.record_optout_event(event(outcome="unresolved"))
    assert ledger.record_optout_event(event(provider="mailgun"))

    assert ledger.optout_event_seen("sendgrid", "sg-1")
    assert not ledger.optout_event_seen("postmark", "sg-1")
    assert [r["outcome"] for r in ledger._rows("SELECT * FROM optout_events")] == [
        "recorded", "recorded"]


def test_complaints_are_counted_per_stream_from_a_time_on(ledger):
    ledger.record_optout_event(event())
    ledger.record_optout_event(event(event_id="sg-2", stream=None))
    ledger.record_optout_event(event(event_id="sg-3", method="esp"))
    ledger.record_optout_event(event(event_id="sg-4", outcome="unresolved"))

    counts = {r["stream"]: r["n"] for r in ledger.complaints_by_stream("2026-12-01")}

    assert counts == {"acme-news": 1, None: 1}
    assert ledger.complaints_by_stream("2026-12-03") == []
    assert [r["event_id"] for r in ledger.unresolved_optout_events()] == ["sg-4"]


def test_a_nonce_is_accepted_once(ledger):
    assert ledger.note_nonce("mailgun", "n1", "2026-12-02T04:00:00", "2026-12-02T03:50:00")
    assert not ledger.note_nonce("mailgun", "n1", "2026-12-02T04:01:00", "2026-12-02T03:51:00")
    assert ledger.note_nonce("other", "n1", "2026-12-02T04:01:00", "2026-12-02T03:51:00")


def test_a_nonce_too_old_to_come_fresh_is_forgotten_and_a_forgotten_one_accepted_again(ledger):
    ledger.note_nonce("mailgun", "old", "2026-12-02T03:00:00", "2026-12-02T02:50:00")
    ledger.note_nonce("mailgun", "n2", "2026-12-02T04:00:00", "2026-12-02T03:50:00")
    assert [r[0] for r in ledger._tuples("SELECT nonce FROM webhook_nonces")] == ["n2"]

    ledger.forget_nonce("mailgun", "n2")

    assert ledger.note_nonce("mailgun", "n2", "2026-12-02T04:02:00", "2026-12-02T03:52:00")
