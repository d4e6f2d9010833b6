"""A SQLite ledger keeps people's records read lately (Ledger.history) under its change
version (migration 0009) and reads them again as soon as anything a decision could see
changes, whoever commits it: this process, another process, an erasure, a hand-made
update or delete."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from gateway.evidence import parse_evidence
from gateway.ledger import Ledger

PERSON = "jane@example.com"
HASH = "ab" * 16  # the person's suppression hash, as a decision asks with it


def evidence(address: str = PERSON, basis: str = "consent"):
    return parse_evidence({"org": "acme", "channel": "email", "address": address,
                           "basis": basis, "obtained_at": "2026-01-10T10:00:00Z",
                           "source": "signup form"}, {"acme": "GB"})


@pytest.fixture
def ledger(tmp_path):
    book = Ledger(tmp_path / "data")
    book.record_evidence(evidence())
    yield book
    book.close()


def history(ledger):
    return ledger.history("acme", "email", PERSON, HASH)


def test_a_person_decided_again_needs_no_second_read_of_their_records(ledger):
    first = history(ledger)
    assert history(ledger) is first


def test_an_opt_out_another_process_records_counts_on_the_very_next_decision(ledger):
    assert history(ledger)[1] == ()
    subprocess.run([sys.executable, "-c", (
        "import sys; from gateway.ledger import Ledger; "
        "b = Ledger(sys.argv[1]); b.record_opt_out('acme', 'email', sys.argv[2], "
        "method='link'); b.close()"), str(ledger.path.parent), PERSON], check=True)
    assert [o.kind for o in history(ledger)[1]] == ["optout"]


def test_evidence_and_opt_outs_this_process_records_count_at_once(ledger):
    assert len(history(ledger)[0]) == 1
    other = Ledger(ledger.path.parent)  # its own connections, as another worker's
    try:
        other.record_evidence(evidence(basis="consent"))
        assert len(history(ledger)[0]) == 2
        ledger.record_opt_out("acme", "email", PERSON, method="link")
        assert len(history(ledger)[1]) == 1
    finally:
        other.close()


def test_an_erasure_counts_at_once(ledger):
    assert len(history(ledger)[0]) == 1
    other = Ledger(ledger.path.parent)
    try:
        other.erase("email", PERSON, "*", HASH, "test")
    finally:
        other.close()
    evidence_left, optouts = history(ledger)
    assert evidence_left == () and [o.kind for o in optouts] == ["erased"]


@pytest.mark.parametrize("change", [
    "UPDATE evidence SET basis = 'soft_opt_in'",
    "DELETE FROM evidence",
])
def test_an_update_or_delete_made_by_hand_counts_at_once(ledger, change):
    before = history(ledger)
    with sqlite3.connect(ledger.path, isolation_level=None) as conn:
        conn.execute(change)
    assert history(ledger) != before


def test_the_newest_opt_out_deleted_and_its_id_given_again_still_counts(ledger):
    """Rowids can repeat once the largest row is gone: the delete itself moves the
    version, so the new row with the old id is read."""
    ledger.record_opt_out("acme", "email", PERSON, method="link")
    assert [o.method for o in history(ledger)[1]] == ["link"]
    with sqlite3.connect(ledger.path, isolation_level=None) as conn:
        newest = conn.execute("SELECT MAX(id) FROM optouts").fetchone()[0]
        conn.execute("DELETE FROM optouts WHERE id = ?", (newest,))
    ledger.record_opt_out("acme", "email", PERSON, method="reply")
    assert [o.method for o in history(ledger)[1]] == ["reply"]


def test_records_read_before_a_change_are_not_held_after_it(ledger):
    """Memory: only records read under the current version are held."""
    for n in range(50):
        ledger.history("acme", "email", f"p{n}@example.com", HASH)
    assert len(ledger._histories[1]) == 50
    ledger.record_opt_out("acme", "email", "someone@example.com", method="link")
    history(ledger)
    assert len(ledger._histories[1]) == 1
