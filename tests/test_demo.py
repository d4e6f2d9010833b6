"""`gateway demo` is a newcomer's first run: it must work and show every reason code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.policy import reasons

pytestmark = pytest.mark.slow


def test_demo_exits_zero_and_prints_every_reason_code_it_exercised(tmp_path):
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "demo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    summary = [ln for ln in done.stdout.splitlines() if ln.startswith("reason codes exercised")]
    assert summary, done.stdout
    for code in reasons.ALL:
        assert code in summary[0], f"{code} not exercised"
    assert "rewritten messages (maildir)" in done.stdout


def test_demo_runs_the_same_on_a_postgresql_ledger(tmp_path, pg_cluster):
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "demo", "--ledger",
                           pg_cluster.new_database()], cwd=tmp_path, capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    summary = [ln for ln in done.stdout.splitlines() if ln.startswith("reason codes exercised")]
    assert all(code in summary[0] for code in reasons.ALL)


def test_demo_shows_a_double_opt_in_a_topic_left_and_an_unsubscribe_at_the_esp(tmp_path):
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "demo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    rows = [" ".join(ln.split()) for ln in done.stdout.splitlines()]

    def outcome(who: str, what: str) -> list[str]:
        return [r.removeprefix(f"email {who} {what} ") for r in rows
                if r.startswith(f"email {who} {what} ")]

    assert outcome("signup@example.com", "signs up (double opt-in)") == ["HTTP 202 pending"]
    assert outcome("signup@example.com", "hedge trimmers offer (pending)") == [
        "BLOCKED no_consent"]
    assert outcome("signup@example.com", "confirms by the link") == ["HTTP 200 recorded"]
    assert outcome("signup@example.com", "hedge trimmers offer, again") == ["allowed consent"]
    assert outcome("two.topics@example.com", "leaves Garden machinery") == [
        "HTTP 200 recorded"]
    assert outcome("two.topics@example.com", "hedge trimmers offer, again") == [
        "BLOCKED opted_out"]
    assert outcome("two.topics@example.com", "decking offer") == ["allowed consent"]
    assert outcome("buyer@bigcorp.example", "unsubscribes at the ESP") == ["HTTP 200 recorded"]
    assert outcome("buyer@bigcorp.example", "hedge trimmers offer, again") == [
        "BLOCKED opted_out"]
