"""`[ledger] url` is a libpq URL and behaves as libpq does: a multi-host URL with
`target_session_attrs=read-write` finds the server that takes writes (skipping one that is
down and one that is read-only), and the PG* environment variables fill in what the URL
leaves out."""

from __future__ import annotations

import contextlib

import psycopg
import pytest
from gwtest import free_port

from gateway.evidence import parse_evidence
from gateway.ledger import open_ledger

PERSON = "jane@example.com"


@pytest.fixture(scope="module")
def read_only_cluster(pg_cluster):
    """A second server that answers but takes no writes (what a standby looks like to
    libpq's read-write check)."""
    import pgcluster

    cluster = pgcluster.start_cluster(free_port())
    cluster.sql("ALTER SYSTEM SET default_transaction_read_only = on")
    cluster.sql("SELECT pg_reload_conf()")
    yield cluster
    pgcluster.remove_cluster(cluster)


def schema_of(url: str) -> str:
    return url.split("search_path%3D", 1)[1]


def record_and_read(ledger) -> None:
    ledger.record_evidence(parse_evidence({
        "org": "acme", "channel": "email", "address": PERSON, "basis": "consent",
        "obtained_at": "2026-01-10T10:00:00Z", "source": "signup form"}, {"acme": "GB"}))
    evidence, _ = ledger.history("acme", "email", PERSON)
    assert len(evidence) == 1


def test_a_multi_host_url_with_read_write_skips_a_dead_host_and_a_read_only_one(
        pg_cluster, read_only_cluster, tmp_path):
    primary = pg_cluster.new_database()
    with psycopg.connect(read_only_cluster.url("gateway_tests"), autocommit=True) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
    dead = free_port()
    url = (f"postgresql://gateway@127.0.0.1:{dead},127.0.0.1:{read_only_cluster.port},"
           f"127.0.0.1:{pg_cluster.port}/gateway_tests?target_session_attrs=read-write"
           f"&connect_timeout=2&options=-csearch_path%3D{schema_of(primary)}")
    ledger = open_ledger(url, tmp_path)
    try:
        record_and_read(ledger)
        assert ledger._tuples("SELECT inet_server_port()")[0][0] == pg_cluster.port
        assert ledger.healthy()
    finally:
        ledger.close()
    with contextlib.closing(open_ledger(primary, tmp_path)) as again:
        assert len(again.history("acme", "email", PERSON)[0]) == 1  # written to the primary


def test_the_pg_environment_variables_fill_in_what_the_url_leaves_out(
        pg_cluster, tmp_path, monkeypatch):
    primary = pg_cluster.new_database()
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(pg_cluster.port))
    monkeypatch.setenv("PGUSER", "gateway")
    monkeypatch.setenv("PGDATABASE", "gateway_tests")
    monkeypatch.setenv("PGOPTIONS", f"-csearch_path={schema_of(primary)}")
    ledger = open_ledger("postgresql://", tmp_path)
    try:
        record_and_read(ledger)
        assert ledger.where == "postgresql://"
    finally:
        ledger.close()
