"""The PostgreSQL ledger's connections (gateway/ledger/postgres.py): each thread keeps one.
A kept connection the server closed while it sat idle (a restart at night, an
administrator's pg_terminate_backend) is replaced before it is used: the first call after
is answered, not failed as if the ledger were down."""

from __future__ import annotations

import time

import psycopg
import pytest

from gateway.errors import StoreUnavailable
from gateway.ledger import open_ledger

PERSON = "jane@example.com"


@pytest.fixture
def url(pg_cluster):
    return pg_cluster.new_database()


@pytest.fixture
def ledger(url, tmp_path):
    ledger = open_ledger(url, tmp_path)
    yield ledger
    ledger.close()


def terminate(url: str, pids: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                           (pids,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the server never let them go"
            time.sleep(0.02)


def test_a_kept_connection_the_server_closed_while_idle_is_replaced_before_use(ledger, url):
    ledger.record_opt_out("acme", "email", PERSON, source="test", method="link")
    assert len(ledger.opt_out_rows(PERSON)) == 1  # this thread keeps a connection now
    kept = [conn.info.backend_pid for conn in ledger._held]
    assert kept
    terminate(url, kept)
    time.sleep(0.05)  # the goodbye reaches our socket

    assert len(ledger.opt_out_rows(PERSON)) == 1  # answered: no StoreUnavailable
    assert not {conn.info.backend_pid for conn in ledger._held} & set(kept)


def test_a_connection_lost_inside_the_write_lock_fails_that_block_and_not_the_next_one(
        ledger, url):
    ledger.opt_out_rows(PERSON)
    with pytest.raises(StoreUnavailable), ledger.exclusive():
        terminate(url, [conn.info.backend_pid for conn in ledger._held])
        ledger.opt_out_rows(PERSON)  # in the lock's transaction, on the lost connection
    time.sleep(1.1)  # past the moment calls fail fast
    with ledger.exclusive():  # the opt-out replay's way in: it must not stay shut
        assert ledger.opt_out_rows(PERSON) == []
