"""The evidence ledger (contract: "Evidence records"): what goes in comes back out,
addresses are stored in one canonical form, bad addresses are never stored, and
history is only ever appended to."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.addresses import _validated_email, normalise, normalise_email, normalise_phone
from gateway.errors import InvalidAddress, ValidationError
from gateway.evidence import parse_evidence
from gateway.ledger import DecisionRecord, Ledger, TokenRecord, open_ledger
from gateway.policy import Decision

REGIONS = {"acme": "GB", "owls": "GB"}
WHEN = "2026-01-10T10:00:00Z"


@pytest.fixture
def ledger(tmp_path, ledger_url):
    book = open_ledger(ledger_url, tmp_path / "data")
    yield book
    book.close()


@pytest.fixture
def sqlite_ledger(tmp_path):
    book = Ledger(tmp_path / "data")
    yield book
    book.close()


def evidence(**fields):
    """A validated evidence record, as the API and the CSV import build it."""
    base = {"org": "acme", "channel": "email", "address": "jane.doe@example.com",
            "basis": "consent", "obtained_at": WHEN, "source": "signup form v3"}
    base.update(fields)
    return parse_evidence(base, REGIONS)


def rows(ledger: Ledger, table: str) -> list[dict]:
    return list(ledger.iter_all(table))


def decision_record(address: str = "jane.doe@example.com", mode: str = "enforce"):
    return DecisionRecord(org="acme", channel="email", address=address, stream="acme-news",
                          purpose="marketing", nature="commercial", category="lawnmowers",
                          message_id="<m1@example.com>", mode=mode)


# -- round trips ------------------------------------------------------------------------


def test_a_soft_opt_in_record_reads_back_with_every_field(ledger):
    stored = evidence(basis="soft_opt_in", context="sale", categories=["lawnmowers", "decking"],
                      opt_out_offered=True, source="checkout, opt-out box shown")
    record_id = ledger.record_evidence(stored, via="test")

    (back,) = ledger.evidence_for("jane.doe@example.com", "email", "acme")

    assert back.id == str(record_id)
    assert back.org == "acme" and back.channel == "email"
    assert back.address == "jane.doe@example.com"
    assert back.basis == "soft_opt_in" and back.context == "sale"
    assert back.categories == ("lawnmowers", "decking")
    assert back.opt_out_offered is True
    assert back.collected_by == "self"
    assert back.source == "checkout, opt-out box shown"
    assert back.obtained_at == datetime(2026, 1, 10, 10, 0, tzinfo=UTC)


def test_a_third_party_consent_keeps_its_named_orgs(ledger):
    ledger.record_evidence(evidence(collected_by="third_party",
                                    named_orgs=["Acme Garden Ltd", "Bloom Ltd"]))

    (back,) = ledger.evidence_for("jane.doe@example.com")

    assert back.collected_by == "third_party"
    assert back.named_orgs == ("Acme Garden Ltd", "Bloom Ltd")
    assert back.opt_out_offered is None and back.context is None


def test_evidence_lookup_filters_by_channel_and_org(ledger):
    ledger.record_evidence(evidence())
    ledger.record_evidence(evidence(org="owls"))
    ledger.record_evidence(evidence(channel="sms", address="07400 123456"))

    assert [e.org for e in ledger.evidence_for("jane.doe@example.com", "email", "acme")] == [
        "acme"]
    assert {e.org for e in ledger.evidence_for("jane.doe@example.com")} == {"acme", "owls"}
    assert ledger.evidence_for("+447400123456", "email") == ()


def test_many_records_are_stored_in_one_call_and_counted(ledger):
    records = [evidence(address=f"person{n}@example.com") for n in range(50)]

    assert ledger.record_evidence_many(records, via="csv:test.csv") == 50

    assert len(rows(ledger, "evidence")) == 50
    assert {r["recorded_via"] for r in rows(ledger, "evidence")} == {"csv:test.csv"}


def test_an_opt_out_reads_back_with_its_scope_and_method(ledger):
    at = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)
    opt_id = ledger.record_opt_out("acme", "email", "jane.doe@example.com", source="link",
                                   method="http", message_id="<m1@x>", at=at)

    (back,) = ledger.opt_outs_for("jane.doe@example.com", "acme")

    assert (back.id, back.org, back.channel, back.kind) == (str(opt_id), "acme", "email",
                                                            "optout")
    assert (back.source, back.method, back.at) == ("link", "http", at)


def test_an_opt_out_of_every_org_applies_to_each_org(ledger):
    ledger.record_opt_out("*", "sms", "+447400123456", method="sms")

    assert [o.org for o in ledger.opt_outs_for("+447400123456", "acme")] == ["*"]
    assert [o.org for o in ledger.opt_outs_for("+447400123456", "owls")] == ["*"]


def test_an_opt_out_of_all_channels_reads_back_as_all(ledger):
    ledger.record_opt_out("acme", "all", "jane.doe@example.com", method="api")

    (back,) = ledger.opt_outs_for("jane.doe@example.com", "acme")

    assert back.channel == "all"


def test_an_opt_out_of_another_org_is_not_returned_for_this_org(ledger):
    ledger.record_opt_out("owls", "email", "jane.doe@example.com")

    assert ledger.opt_outs_for("jane.doe@example.com", "acme") == ()
    assert len(ledger.opt_outs_for("jane.doe@example.com")) == 1


def test_history_returns_this_persons_evidence_and_opt_outs_for_the_org(ledger):
    ledger.record_evidence(evidence())
    ledger.record_evidence(evidence(org="owls"))
    ledger.record_opt_out("*", "all", "jane.doe@example.com")

    found, outs = ledger.history("acme", "email", "jane.doe@example.com")

    assert [e.org for e in found] == ["acme"]
    assert [o.org for o in outs] == ["*"]


def test_a_decision_reads_back_with_its_reason_evidence_and_message_id(ledger):
    decision = Decision(True, "consent", "specific consent", evidence_id="7", ruleset="uk-pecr")
    ledger.record_decision(decision, decision_record())

    (back,) = ledger.decisions_for("jane.doe@example.com", "acme")

    assert back["allowed"] == 1 and back["outcome"] == "allowed"
    assert (back["reason"], back["evidence_id"], back["message_id"]) == (
        "consent", "7", "<m1@example.com>")
    assert (back["stream"], back["category"], back["ruleset"], back["mode"]) == (
        "acme-news", "lawnmowers", "uk-pecr", "enforce")


def test_a_block_in_monitor_mode_is_recorded_as_would_block(ledger):
    ledger.record_decision(Decision(False, "no_consent", "nothing recorded"),
                           decision_record(mode="monitor"))

    (back,) = ledger.decisions_for("jane.doe@example.com")

    assert back["outcome"] == "would_block" and back["allowed"] == 0


def test_an_unsubscribe_token_reads_back_as_the_person_it_stands_for(ledger):
    record = TokenRecord("abc123", "acme", "email", "jane.doe@example.com", "acme-news",
                         "<m1@x>", "sales@acme.example")
    ledger.record_tokens([record])

    assert ledger.token("abc123") == record
    assert ledger.token("unknown") is None


def test_the_trail_holds_evidence_opt_outs_and_decisions_of_the_person(ledger):
    ledger.record_evidence(evidence(basis="soft_opt_in", context="sale",
                                    categories=["lawnmowers"], opt_out_offered=False))
    ledger.record_opt_out("acme", "email", "jane.doe@example.com", method="http")
    ledger.record_decision(Decision(False, "opted_out", "opted out"), decision_record())
    ledger.record_evidence(evidence(address="someone.else@example.com"))

    trail = ledger.trail("jane.doe@example.com", "acme")

    assert (trail["address"], trail["org"]) == ("jane.doe@example.com", "acme")
    (ev,) = trail["evidence"]
    assert ev["categories"] == ["lawnmowers"] and ev["opt_out_offered"] is False
    assert [o["method"] for o in trail["opt_outs"]] == ["http"]
    (dec,) = trail["decisions"]
    assert dec["reason"] == "opted_out" and dec["allowed"] is False


# -- normalisation ----------------------------------------------------------------------


def test_email_domains_match_whatever_their_case(ledger):
    ledger.record_evidence(evidence(address="Jane.Doe@EXAMPLE.Com"))

    assert len(ledger.evidence_for(normalise("email", "jane.doe@example.COM"))) == 1


def test_an_internationalised_domain_is_stored_in_its_ascii_form():
    assert normalise_email("jane@Bücher.de") == "jane@xn--bcher-kva.de"


def test_the_unicode_and_ascii_forms_of_a_domain_match(ledger):
    ledger.record_evidence(evidence(address="jane@Bücher.de"))

    assert len(ledger.evidence_for(normalise_email("jane@xn--bcher-kva.de"))) == 1


def test_surrounding_whitespace_is_trimmed_from_addresses():
    assert normalise_email("  jane.doe@example.com \t") == "jane.doe@example.com"
    assert normalise_phone(" +447400123456\n") == "+447400123456"


def test_a_national_and_an_international_uk_mobile_number_are_the_same_person():
    assert normalise_phone("07400 123456") == normalise_phone("+447400123456") == "+447400123456"


def test_a_national_number_is_read_in_the_given_region():
    assert normalise_phone("0612345678", "NL") == "+31612345678"


def test_a_number_in_the_drama_range_is_refused():
    with pytest.raises(InvalidAddress) as caught:
        normalise_phone("07700 900123")

    assert caught.value.address == "07700 900123"


def test_an_evidence_record_with_a_drama_range_number_is_refused_naming_the_address(ledger):
    with pytest.raises(ValidationError) as caught:
        ledger.record_evidence(evidence(channel="sms", address="07700 900123"))

    assert set(caught.value.fields) == {"address"}
    assert rows(ledger, "evidence") == []


def test_an_address_without_an_at_sign_is_refused():
    with pytest.raises(InvalidAddress):
        normalise_email("jane.doe.example.com")


def test_an_evidence_record_with_an_invalid_email_is_refused_naming_the_address():
    with pytest.raises(ValidationError) as caught:
        evidence(address="jane@@example")

    assert set(caught.value.fields) == {"address"}


def test_an_empty_address_is_refused():
    with pytest.raises(InvalidAddress):
        normalise_email("   ")


# Addresses drawn to hit the edges of the fast path: plain and odd local parts, IDN and
# reserved domains, long labels, stray @-signs, quotes and spaces.
LOCAL_CHARS = "abcXYZ019._+-'!#~\"@ éü"
DOMAINS = ("example.com", "EXAMPLE.org", "Bücher.de", "xn--bcher-kva.de", "example.test",
           "localhost", "a..b.com", "-x.com", "x-.com", "[127.0.0.1]", "ex ample.com", "",
           "例え.jp", "x.com>", "a" * 63 + ".com", "a" * 64 + ".com")
long_domains = st.lists(st.sampled_from(["a" * 60, "b" * 63, "ü" * 20, "c"]), min_size=1,
                        max_size=6).map(lambda labels: ".".join(labels) + ".com")
email_addresses = st.builds(
    lambda local, domain, pad: f"{pad}{local}@{domain}{pad}",
    st.text(LOCAL_CHARS, min_size=0, max_size=80),
    st.one_of(st.sampled_from(DOMAINS), long_domains),
    st.sampled_from(["", " ", "\t"]),
)


def outcome(fn, address: str) -> str:
    try:
        return fn(address)
    except InvalidAddress as exc:
        return f"refused: {exc.reason}"


@settings(max_examples=400, deadline=None)
@given(email_addresses)
@example("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".com")
@example("a" * 70 + "@example.com")
def test_the_quick_email_check_agrees_with_the_full_validator(address):
    assert outcome(normalise_email, address) == outcome(
        lambda a: _validated_email(a, a.strip()), address)


# -- append-only and durability ---------------------------------------------------------


def test_an_opt_in_after_an_opt_out_adds_a_row_and_leaves_the_opt_out_as_it_was(ledger):
    ledger.record_opt_out("acme", "email", "jane.doe@example.com", method="http")
    before = rows(ledger, "optouts")

    ledger.record_opt_out("acme", "email", "jane.doe@example.com", kind="optin", method="sms")

    after = rows(ledger, "optouts")
    assert after[: len(before)] == before
    assert [r["kind"] for r in after] == ["optout", "optin"]


def test_new_evidence_for_a_person_adds_a_row_beside_the_old_one(ledger):
    ledger.record_evidence(evidence())
    before = rows(ledger, "evidence")

    ledger.record_evidence(evidence(source="signup form v4"))

    after = rows(ledger, "evidence")
    assert after[:1] == before
    assert [r["source"] for r in after] == ["signup form v3", "signup form v4"]


def test_ledger_writes_never_update_or_delete_rows(sqlite_ledger):
    ledger = sqlite_ledger
    statements: list[str] = []
    ledger.conn.set_trace_callback(statements.append)

    ledger.record_evidence(evidence())
    ledger.record_evidence_many([evidence(address="b@example.com")])
    ledger.record_opt_out("acme", "all", "jane.doe@example.com")
    ledger.record_opt_out("acme", "all", "jane.doe@example.com", kind="optin")
    ledger.record_decision(Decision(True, "consent", "ok"), decision_record())
    ledger.record_tokens([TokenRecord("t1", "acme", "email", "b@example.com", None, None, None)])

    verbs = {s.split()[0].upper() for s in statements}
    assert "INSERT" in verbs
    assert not verbs & {"UPDATE", "DELETE", "REPLACE"}


def test_the_database_runs_in_wal_mode(sqlite_ledger):
    ledger = sqlite_ledger
    with sqlite3.connect(ledger.path) as other:
        (mode,) = other.execute("PRAGMA journal_mode").fetchone()

    assert mode == "wal"


def test_records_survive_closing_and_reopening_the_ledger(tmp_path, ledger_url):
    first = open_ledger(ledger_url, tmp_path / "data")
    first.record_evidence(evidence())
    first.close()

    again = open_ledger(ledger_url, tmp_path / "data")
    try:
        assert len(again.evidence_for("jane.doe@example.com")) == 1
    finally:
        again.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["acme", "owls"]), st.sampled_from(["email", "sms"]),
                          st.sampled_from(["consent", "soft_opt_in"]),
                          st.lists(st.sampled_from(["tools", "seeds"]), max_size=2)),
                max_size=6),
       st.lists(st.tuples(st.sampled_from(["acme", "owls", "*"]),
                          st.sampled_from(["email", "sms"]),
                          st.sampled_from(["optout", "optin"])), max_size=6))
def test_history_reads_what_the_two_lookups_read(fresh_ledger, records, optouts):
    """`history` reads evidence and opt-outs with one statement: the same records, in the
    same order, as `evidence_for` and `opt_outs_for` each read."""
    book = fresh_ledger()
    address_of = {"email": "a@example.com", "sms": "+447400123456"}
    for org, channel, basis, categories in records:
        address = address_of[channel]
        fields = {"org": org, "channel": channel, "address": address, "basis": basis,
                  "obtained_at": WHEN, "source": "form", "categories": categories}
        if basis == "soft_opt_in":
            fields.update(context="sale", opt_out_offered=True,
                          categories=categories or ["tools"])
        book.record_evidence(parse_evidence(fields, REGIONS))
    for org, channel, kind in optouts:
        book.record_opt_out(org, channel, address_of[channel], kind=kind, source="test")
    for org in ("acme", "owls"):
        for channel, address in address_of.items():
            assert book.history(org, channel, address) == (
                book.evidence_for(address, channel, org), book.opt_outs_for(address, org))


@pytest.mark.parametrize("n", [1, 2, 7, 500, 501])
def test_each_decision_of_a_batch_gets_the_id_of_its_own_row(ledger, n):
    """Up to 500 decisions go in as one statement, more in a transaction of several: either
    way the ids answered are those of the rows, in order."""
    ledger.write_batch(decisions=[(Decision(False, "no_consent", "none"),
                                   decision_record(address="first@example.com"))])
    people = [f"p{i}@example.com" for i in range(n)]
    ids = ledger.write_batch(decisions=[(Decision(True, "consent", f"#{i}"), decision_record(address=p))
                                        for i, p in enumerate(people)])
    assert len(set(ids)) == n
    for i, (decision_id, person) in enumerate(zip(ids, people)):
        row = ledger.decisions_for(person)[0]
        assert (row["id"], row["explanation"]) == (decision_id, f"#{i}")
