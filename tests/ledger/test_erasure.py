"""Erasure and retention in the ledger (docs/privacy.md), on both backends: a person's
records go in one transaction and one suppression entry (keyed hash, no address) stays;
decisions past the retention go in batches; evidence, opt-outs and erasures never do."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from gwtest import make_settings

from gateway.consent import Classification, ConsentService
from gateway.errors import ConfigError
from gateway.evidence import parse_evidence
from gateway.ledger import DecisionRecord, TokenRecord, open_ledger
from gateway.policy import Decision
from gateway.privacy.erasure import ErasureRequest, Erasures
from gateway.privacy.retention import Retention
from gateway.privacy.suppression import KEY_FILE

PERSON = "zelda.quartermain@example.com"
OTHER = "otto.other@example.com"
REGIONS = {"acme": "GB", "owls": "GB"}
NEWS = Classification(org="acme", stream="acme-news", purpose="marketing",
                      nature="commercial", category="lawnmowers")


@pytest.fixture
def service(tmp_path, ledger_url):
    settings = make_settings(tmp_path, ledger_url=ledger_url)
    ledger = open_ledger(ledger_url, settings.gateway.data_dir)
    yield ConsentService(settings, ledger)
    ledger.close()


def evidence(service, address=PERSON, org="acme", basis="consent", days_ago=30, **more):
    record = {"org": org, "channel": "email", "address": address, "basis": basis,
              "obtained_at": (datetime.now(UTC) - timedelta(days=days_ago)).isoformat(),
              "source": f"sign-up form of {address}", **more}
    return service.ledger.record_evidence(parse_evidence(record, REGIONS), "test")


def fill(service, address=PERSON, org="acme") -> None:
    """Evidence, an opt-out and an opt-in, a token and a decision of one person."""
    evidence(service, address, org)
    service.ledger.record_opt_out(org, "email", address, source=f"reply from {address}",
                                  method="reply", client="203.0.113.9")
    service.ledger.record_opt_out(org, "email", address, kind="optin", source="form")
    service.ledger.write_batch(tokens=[TokenRecord(f"tok{org}{address[:3]}", org, "email",
                                                   address, "acme-news", "<m@acme.test>",
                                                   None)])
    c = Classification(org, None, "marketing", "commercial", "lawnmowers")
    service.decide(c, "email", address, "<m@acme.test>")


def erase(service, address=PERSON, org="*", channel="email", source="letter of 2 May"):
    return Erasures(service.ledger, service).erase(
        ErasureRequest(channel, address, org, source))


def test_erasure_removes_every_record_of_the_person_and_keeps_one_suppression_entry(service):
    fill(service)
    fill(service, OTHER)
    answer = erase(service)
    assert answer["new"] is True
    assert answer["removed"] == {"evidence": 1, "opt_outs": 2, "tokens": 1, "decisions": 1,
                                 "outside_events": 0, "copies": 0, "deferred_texts": 0}
    ledger = service.ledger
    assert ledger.trail(PERSON)["evidence"] == [] and ledger.trail(PERSON)["opt_outs"] == []
    assert ledger.trail(PERSON)["decisions"] == []
    assert ledger.token(f"tokacme{PERSON[:3]}") is None
    [entry] = ledger.erasures_for(service.suppression.of("email", PERSON))
    assert (entry["org"], entry["channel"], entry["source"]) == ("*", "email", "letter of 2 May")
    assert len(ledger.trail(OTHER)["evidence"]) == 1  # nobody else's records
    assert len(list(ledger.iter_all("decisions"))) == 2  # counted still, without the address


def test_an_erased_person_is_blocked_with_erased_until_new_specific_consent(service):
    fill(service)
    erase(service)
    assert service.evaluate(NEWS, "email", PERSON).reason == "erased"
    evidence(service, basis="soft_opt_in", days_ago=0, context="sale",
             categories=["lawnmowers"], opt_out_offered=True)
    assert service.evaluate(NEWS, "email", PERSON).reason == "erased"
    service.ledger.record_opt_out("acme", "email", PERSON, kind="optin", source="START")
    assert service.evaluate(NEWS, "email", PERSON).reason == "erased"
    evidence(service, days_ago=0)  # signed up again: consent after the erasure
    assert service.evaluate(NEWS, "email", PERSON).reason == "consent"


def test_erasure_for_one_org_leaves_the_persons_records_with_another_org(service):
    fill(service, org="acme")
    fill(service, org="owls")
    answer = erase(service, org="acme")
    assert answer["removed"]["evidence"] == 1 and answer["removed"]["decisions"] == 1
    trail = service.ledger.trail(PERSON)
    assert [e["org"] for e in trail["evidence"]] == ["owls"]
    assert {o["org"] for o in trail["opt_outs"]} == {"owls"}
    assert service.evaluate(NEWS, "email", PERSON).reason == "erased"
    owls = Classification("owls", None, "marketing", "campaigning", None)
    evidence(service, org="owls", days_ago=0)
    assert service.evaluate(owls, "email", PERSON).reason == "consent"


def test_a_second_erasure_records_nothing_new_and_removes_nothing(service):
    fill(service)
    first = erase(service)
    again = erase(service, source="asked again")
    assert again["new"] is False and again["erasure_id"] == first["erasure_id"]
    assert set(again["removed"].values()) == {0}
    assert len(service.ledger.erasures_for(service.suppression.of("email", PERSON))) == 1


def test_an_address_never_seen_is_still_suppressed_once_erased(service):
    answer = erase(service, address="never.seen@example.com")
    assert answer["new"] is True and set(answer["removed"].values()) == {0}
    assert service.evaluate(NEWS, "email", "never.seen@example.com").reason == "erased"
    assert service.evaluate(NEWS, "email", OTHER).reason == "no_consent"


def test_an_erasure_of_texts_leaves_the_persons_email_alone(service):
    evidence(service)
    erase(service, address="+447400123456", channel="sms")
    assert service.evaluate(NEWS, "email", PERSON).reason == "consent"


def test_a_decision_allowed_before_an_erasure_no_longer_still_allows(service):
    evidence(service)
    decision, seen = service.assess(NEWS, "email", PERSON)
    assert decision.allowed and seen == 0
    assert service.still_allows("acme", PERSON, service.incarnation, seen)
    erase(service)
    assert not service.still_allows("acme", PERSON, service.incarnation, seen)


def text_columns(ledger) -> list[tuple[str, str]]:
    """(table, column) of every text column of the ledger (PostgreSQL)."""
    return ledger._tuples(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND data_type IN ('text', 'character varying')")


def test_the_ledger_holds_no_trace_of_an_erased_address(service, ledger_url):
    fill(service)
    fill(service, OTHER)
    erase(service)
    ledger = service.ledger
    if ledger_url:  # PostgreSQL: every text column of every table, row by row
        columns = text_columns(ledger)
        assert ("suppressions", "hash") in columns and ("decisions", "address") in columns
        for table, column in columns:
            for needle in (PERSON, "zelda.quartermain", "quartermain"):
                found = ledger._tuples(
                    f"SELECT COUNT(*) FROM {table} WHERE {column} ILIKE ?",  # noqa: S608
                    [f"%{needle}%"])[0][0]
                assert found == 0, (table, column)
        assert ledger._tuples("SELECT COUNT(*) FROM evidence WHERE address = ?",
                              [OTHER])[0][0] == 1  # the search does find what is there
    else:  # SQLite: the bytes of the file and of its WAL
        files = [f for f in Path(ledger.path).parent.iterdir() if f.name.startswith("ledger")]
        held = b"".join(f.read_bytes() for f in files)
        assert b"otto.other" in held  # the search does find what is there
        assert b"quartermain" not in held and "quartermain".encode("utf-16-le") not in held


def test_the_suppression_entry_cannot_be_matched_without_the_key(service, tmp_path):
    erase(service)
    [entry] = service.ledger._tuples("SELECT hash FROM suppressions")
    import hashlib
    for guess in (PERSON, f"email\0{PERSON}", f"email:{PERSON}"):
        assert hashlib.sha256(guess.encode()).hexdigest() != entry[0]
    assert service.suppression.of("email", PERSON) == entry[0]


def test_retention_deletes_old_decisions_in_batches_and_nothing_else(service):
    fill(service)
    erase(service, address=OTHER)
    old = datetime.now(UTC) - timedelta(days=800)
    what = DecisionRecord(org="acme", channel="email", address=OTHER, stream="acme-news",
                          purpose="marketing", nature="commercial", category=None,
                          message_id=None, mode="enforce")
    service.ledger.write_batch(decisions=[
        (Decision(False, "no_consent", "x", decided_at=old + timedelta(seconds=i)), what)
        for i in range(25)])
    before = {t: len(list(service.ledger.iter_all(t)))
              for t in ("evidence", "optouts", "suppressions", "decisions")}
    deleted = asyncio.run(Retention(service.ledger, 730 * 86400, batch=10).run_once())
    assert deleted == 25
    after = {t: len(list(service.ledger.iter_all(t)))
             for t in ("evidence", "optouts", "suppressions", "decisions")}
    assert after == {**before, "decisions": before["decisions"] - 25}
    assert asyncio.run(Retention(service.ledger, 0).run_once()) == 0  # "0" keeps forever


def test_the_generated_suppression_key_is_kept_in_data_dir_readable_by_its_owner_only(
        service):
    path = service.settings.gateway.data_dir / KEY_FILE
    if service.settings.privacy.suppression_key:
        pytest.skip("a shared ledger's gateways are configured with one key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = ConsentService(service.settings, service.ledger)
    assert again.suppression.of("email", PERSON) == service.suppression.of("email", PERSON)


def test_a_gateway_with_another_suppression_key_refuses_the_ledger(service, tmp_path):
    other = make_settings(tmp_path / "other", ledger_url="sqlite:///unused.db")
    import dataclasses
    other = dataclasses.replace(other, privacy=dataclasses.replace(
        other.privacy, suppression_key="a-different-key-entirely"))
    with pytest.raises(ConfigError, match="not the key this ledger"):
        ConsentService(other, service.ledger)


def test_the_suppression_hash_is_hmac_sha256_of_channel_and_address_truncated():
    import hashlib
    import hmac

    from gateway.privacy.suppression import SuppressionKey
    for key in (b"short key", b"k" * 64, b"a much longer key " * 8):
        expected = hmac.new(key, f"email\0{PERSON}".encode(), hashlib.sha256).digest()[:16]
        suppression = SuppressionKey(key)
        assert suppression.of("email", PERSON) == expected.hex()
        assert suppression.of("email", PERSON) == expected.hex()  # remembered, the same
        assert suppression.of("sms", PERSON) != expected.hex()  # per channel, not per address


def esp_event(address: str | None, org: str | None, event_id: str) -> dict:
    return {"provider": "sendgrid", "event_id": event_id, "event_type": "unsubscribe",
            "event_at": None, "received_at": datetime.now(UTC).isoformat(), "method": "esp",
            "outcome": "recorded" if org else "unresolved", "org": org, "stream": None,
            "address": address, "optout_id": None, "problem": "",
            "payload": "{}"}


def test_erasure_removes_the_esp_and_complaint_events_about_the_person(service):
    service.ledger.record_optout_event(esp_event(PERSON, "acme", "ev1"))
    service.ledger.record_optout_event(esp_event(PERSON, None, "ev2"))  # kept for the operator
    service.ledger.record_optout_event(esp_event(OTHER, "acme", "ev3"))
    answer = erase(service, org="acme")
    assert answer["removed"]["outside_events"] == 2
    left = service.ledger._tuples("SELECT address FROM optout_events")
    assert [r[0] for r in left] == [OTHER]


def test_erasure_removes_the_texts_held_for_the_persons_quiet_hours(service, tmp_path):
    import time

    from gateway.ledger.deferred import DeferredText, DeferredTexts

    texts = DeferredTexts(tmp_path / "held")
    try:
        now = time.time()
        for to in ("+447400123456", "+447400123457"):
            texts.hold(DeferredText("<t@acme.test>", "acme-news", "acme", to, "+447400123000",
                                    "Sale", "marketing", "commercial", None, None, now,
                                    now + 3600))
        answer = Erasures(service.ledger, service, tuple, lambda: texts).erase(
            ErasureRequest("sms", "+447400123456", "*", "letter of 2 May"))
        assert answer["removed"]["deferred_texts"] == 1
        assert [t.to for t in texts.due(now + 7200)] == ["+447400123457"]
    finally:
        texts.close()


# -- opt-outs kept in data_dir during a ledger outage ---------------------------------------


def kept_opt_outs(service, folder: Path):
    from gateway.ledger.pending import PendingOptOuts
    from gateway.optouts import OptOuts

    return OptOuts(service.ledger, service, None, PendingOptOuts(folder))


def keep(optouts, address=PERSON, org="acme", channel="email") -> None:
    """An opt-out as the gateway keeps it while the ledger is away (gateway/optouts.py)."""
    from gateway.optouts import OptOutRequest

    optouts.pending.add(dataclasses.asdict(OptOutRequest(
        org, channel, address, source=f"reply from {address}", method="reply")))


def test_an_erasure_removes_the_persons_opt_outs_kept_in_data_dir_and_their_bytes(
        service, tmp_path):
    optouts = kept_opt_outs(service, tmp_path / "kept")
    keep(optouts)
    keep(optouts, channel="all")
    keep(optouts, OTHER)
    try:
        answer = Erasures(service.ledger, service, pending=lambda: optouts.pending).erase(
            ErasureRequest("email", PERSON, "acme", "letter of 2 May"))

        assert answer["removed"]["opt_outs"] == 2 and optouts.pending.count == 1
        held = b"".join(f.read_bytes() for f in (tmp_path / "kept").iterdir())
        assert b"otto.other" in held and b"quartermain" not in held
        assert optouts.replay() == 1
        assert service.ledger.opt_out_rows(PERSON) == []
    finally:
        optouts.pending.close()


def test_an_opt_out_kept_before_an_erasure_made_elsewhere_is_dropped_not_written_back(
        service, tmp_path, caplog):
    optouts = kept_opt_outs(service, tmp_path / "kept")
    keep(optouts)  # kept by this gateway; erased by another one (or `gateway erase`)
    keep(optouts, org="*")  # for every org: an erasure for acme leaves that one
    try:
        erase(service, org="acme")

        assert optouts.replay() == 2 and optouts.pending.count == 0
        assert [(r["org"], r["method"]) for r in service.ledger.opt_out_rows(PERSON)] == [
            ("*", "reply")]
        assert "person erased since" in caplog.text and PERSON not in caplog.text
        assert service.evaluate(NEWS, "email", PERSON).reason in ("erased", "opted_out")
    finally:
        optouts.pending.close()


def test_an_opt_out_kept_after_the_erasure_is_the_persons_new_wish_and_is_written(
        service, tmp_path):
    optouts = kept_opt_outs(service, tmp_path / "kept")
    erase(service, org="acme")
    keep(optouts)  # they signed up again, then opted out while the ledger was away
    try:
        assert optouts.replay() == 1
        assert [r["method"] for r in service.ledger.opt_out_rows(PERSON)] == ["reply"]
    finally:
        optouts.pending.close()
