"""The evidence fields of the rule sets beyond the UK (`region`, `relationship`,
`relationship_ended_at`, `written`, `confirmed_at`) and the rule set, region and region
source of every decision: validated, stored and read back on both ledger backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import ValidationError
from gateway.evidence import parse_evidence
from gateway.importer import import_csv
from gateway.ledger import DecisionRecord, open_ledger
from gateway.policy import Decision

REGIONS = {"acme": "GB"}
WHEN = "2026-01-10T10:00:00Z"


@pytest.fixture
def ledger(tmp_path, ledger_url):
    book = open_ledger(ledger_url, tmp_path / "data")
    yield book
    book.close()


def evidence(**fields):
    base = {"org": "acme", "channel": "sms", "address": "+14165550100", "basis": "soft_opt_in",
            "obtained_at": WHEN, "source": "store till", "categories": ["lawnmowers"],
            "context": "sale", "opt_out_offered": True}
    return parse_evidence({**base, **fields}, REGIONS)


def test_every_new_field_reads_back_as_recorded(ledger):
    record = evidence(region="ca", relationship="ongoing",
                      relationship_ended_at="2026-03-01T00:00:00Z", written=True,
                      confirmed_at="2026-01-10T10:05:00Z")
    ledger.record_evidence(record, "test")

    (back,) = ledger.evidence_for("+14165550100", "sms", "acme")
    assert (back.region, back.relationship, back.written) == ("CA", "ongoing", True)
    assert back.relationship_ended_at == datetime(2026, 3, 1, tzinfo=UTC)
    assert back.confirmed_at == datetime(2026, 1, 10, 10, 5, tzinfo=UTC)
    history, _ = ledger.history("acme", "sms", "+14165550100")
    assert history == (back,)
    (row,) = ledger.trail("+14165550100", "acme")["evidence"]
    assert (row["region"], row["written"], row["relationship"]) == ("CA", True, "ongoing")


def test_a_record_without_the_new_fields_keeps_its_old_meaning(ledger):
    ledger.record_evidence(evidence(), "test")

    (back,) = ledger.evidence_for("+14165550100", "sms", "acme")
    assert (back.region, back.relationship, back.relationship_ended_at, back.written,
            back.confirmed_at) == (None, "one_off", None, False, None)


def test_every_decision_records_its_rule_set_region_and_where_the_region_came_from(ledger):
    decision = Decision(True, "implied_purchase", "a sale", ruleset="ca-casl", region="CA",
                        region_source="number")
    what = DecisionRecord(org="acme", channel="sms", address="+14165550100", stream=None,
                          purpose="marketing", nature="commercial", category=None,
                          message_id=None, mode="enforce")
    ledger.write_batch(decisions=[(decision, what)])

    (row,) = ledger.decisions_for("+14165550100", "acme")
    assert (row["ruleset"], row["region"], row["region_source"]) == ("ca-casl", "CA", "number")


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("region", "Canada", "ISO 3166-1 alpha-2 country code"),
    ("region", "UK", "the United Kingdom is GB"),  # else the org's default rule set decides
    ("region", "XX", "ISO 3166-1 alpha-2 country code"),
    ("relationship", "lifelong", "not one of one_off, ongoing"),
    ("written", "maybe", "true or false"),
    ("confirmed_at", "2026-01-10", "no time zone"),
    ("relationship_ended_at", (datetime.now(UTC) + timedelta(days=2)).isoformat(),
     "in the future"),
    ("confirmed_at", (datetime.now(UTC) + timedelta(hours=1)).isoformat(), "in the future"),
])
def test_a_bad_new_field_is_refused_naming_it(field, value, problem):
    with pytest.raises(ValidationError) as caught:
        evidence(**{field: value})
    assert problem in caught.value.fields[field]


def test_the_csv_import_reads_the_new_fields_and_names_the_line_of_each_bad_row(
        tmp_path, ledger):
    path = tmp_path / "people.csv"
    path.write_text(
        "org,channel,address,basis,obtained_at,source,region,relationship,"
        "relationship_ended_at,written,confirmed_at\n"
        "acme,sms,+14165550100,consent,2026-01-10T10:00:00Z,form,CA,ongoing,,true,"
        "2026-01-11T10:00:00Z\n"
        "acme,sms,+14165550101,consent,2026-01-10T10:00:00Z,form,Canada,,,,\n"
        "acme,sms,+14165550102,consent,2026-01-10T10:00:00Z,form,,,,perhaps,\n"
        "acme,sms,+14165550103,consent,2026-01-10T10:00:00Z,form,,ongoing,2099-01-01T00:00:00Z,,\n",
        "utf-8")

    report = import_csv(path, ledger, REGIONS)

    assert report.stored == 1
    assert [line for line, _ in report.bad] == [3, 4, 5]
    assert "region:" in report.bad[0][1] and "written:" in report.bad[1][1]
    assert "relationship_ended_at:" in report.bad[2][1]
    (back,) = ledger.evidence_for("+14165550100", "sms", "acme")
    assert (back.region, back.relationship, back.written) == ("CA", "ongoing", True)
    assert back.confirmed_at == datetime(2026, 1, 11, 10, tzinfo=UTC)
