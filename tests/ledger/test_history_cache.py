"""A running gateway's PostgreSQL ledger keeps people's records read lately
(gateway/ledger/cache.py) and forgets them when the ledger announces a change: what
another gateway records counts here within the contract's second, what this process
records counts at once, and a cache that cannot prove it is keeping up answers nothing."""

from __future__ import annotations

import time

import psycopg
import pytest

from gateway.evidence import parse_evidence
from gateway.ledger import open_ledger

PERSON = "jane@example.com"
BOUND = 1.0  # the contract: a cache in front of the ledger is stale for at most 1 s


@pytest.fixture
def url(pg_cluster):
    return pg_cluster.new_database()


@pytest.fixture
def cached(url, tmp_path):
    ledger = open_ledger(url, tmp_path, cache=True)
    ledger.record_evidence(parse_evidence({
        "org": "acme", "channel": "email", "address": PERSON, "basis": "consent",
        "obtained_at": "2026-01-10T10:00:00Z", "source": "signup form"}, {"acme": "GB"}))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the listener proves itself fresh (two round trips)
        ledger.history("acme", "email", PERSON)
        if ledger.cache.hits:
            break
        time.sleep(0.05)
    assert ledger.cache.hits, "the cache never started answering"
    yield ledger
    ledger.close()


def opt_outs(ledger) -> int:
    return len(ledger.history("acme", "email", PERSON)[1])


def seconds_until_seen(ledger, committed_at: float) -> float:
    """When, after the commit, the first read that saw the change began. A read begun
    BOUND or more after the commit that still misses it fails at once (the test's own
    slowness between reads is no failure of the cache's)."""
    while True:
        began = time.monotonic() - committed_at
        if opt_outs(ledger):
            return began
        assert began < BOUND, f"a read begun {began:.2f} s after the change missed it"
        time.sleep(0.01)


def opt_out_elsewhere(url: str) -> float:
    """An opt-out recorded through another connection (another gateway); when it was
    committed."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO optouts (org, channel, address, kind, at, source, method) "
                     "VALUES ('acme', 'email', %s, 'optout', '2026-02-01T00:00:00+00:00', "
                     "'other gateway', 'link')", (PERSON,))
    return time.monotonic()


def test_a_person_decided_again_is_read_from_the_cache(cached):
    hits = cached.cache.hits
    for _ in range(5):
        assert opt_outs(cached) == 0
    assert cached.cache.hits == hits + 5


def test_an_opt_out_recorded_by_another_gateway_counts_here_within_a_second(cached, url):
    assert opt_outs(cached) == 0  # cached
    seconds_until_seen(cached, opt_out_elsewhere(url))


def test_an_opt_out_recorded_by_this_process_counts_on_the_very_next_decision(cached):
    assert opt_outs(cached) == 0  # cached
    cached.record_opt_out("acme", "email", PERSON, source="test", method="link")
    assert opt_outs(cached) == 1


def test_a_read_that_raced_with_a_change_is_not_kept(cached):
    cache = cached.cache
    before = cache.changes()
    cache.forget("0" * 32)  # a change to anyone, while the read was on its way
    cache.put(("acme", "email", "tom@example.com", ""), "tom@example.com", ((), ()), before)
    assert cache.get(("acme", "email", "tom@example.com", "")) is None


def test_when_the_listener_loses_its_connection_no_change_is_missed(cached, url):
    assert opt_outs(cached) == 0  # cached
    with psycopg.connect(url, autocommit=True) as conn:
        killed = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = 'consent-gateway-listener'").fetchall()
    assert killed
    seconds_until_seen(cached, opt_out_elsewhere(url))
