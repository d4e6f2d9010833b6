"""The ledger's schema is versioned: an empty database gets it, `gateway migrate` upgrades
an older one and says what it did, `gateway run` refuses one at another version in one
line, gateways starting together create it once, and `gateway ledger copy` moves an SQLite
ledger into PostgreSQL with every record, id and time."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.evidence import parse_evidence
from gateway.ledger import DecisionRecord, SchemaMismatch, TokenRecord, open_ledger
from gateway.ledger.migrate import code_version, migrations
from gateway.policy import Decision

REGIONS = {"acme": "GB"}
PERSON = "jane@example.com"


def write_config(tmp_path: Path, ledger_url: str = "") -> Path:
    path = tmp_path / "config.toml"
    text = f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n'
    # One key for the SQLite ledger and its PostgreSQL copy (not each data_dir's own).
    text += '[privacy]\nsuppression_key = "migrations-test-key"\n'
    if ledger_url:
        text += f'[ledger]\nurl = "{ledger_url}"\n'
    path.write_text(text + '[[org]]\nid = "acme"\nname = "Acme"\ntype = "commercial"\n',
                    "utf-8")
    return path


def versions(ledger) -> list[int]:
    return [r[0] for r in ledger._tuples("SELECT version FROM schema_migrations ORDER BY 1")]


def make_version_1(ledger_url: str, data_dir: Path) -> None:
    """A ledger as the previous release left it: migration 1 alone."""
    first = migrations()[0]
    if ledger_url:
        import psycopg

        with psycopg.connect(ledger_url, autocommit=True) as conn:
            for statement in first.statements("postgresql"):
                conn.execute(statement)
            conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                         "name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            conn.execute("INSERT INTO schema_migrations VALUES (1, 'ledger', 'then')")
    else:  # 0.2 kept no schema_migrations at all
        data_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(data_dir / "ledger.db")
        for statement in first.statements("sqlite"):
            conn.execute(statement)
        conn.execute("INSERT INTO optouts (org, channel, address, kind, at) VALUES "
                     "('acme', 'email', 'old@example.com', 'optout', '2026-01-01T00:00:00')")
        conn.commit()
        conn.close()


def test_an_empty_database_gets_every_migration(tmp_path, ledger_url):
    ledger = open_ledger(ledger_url, tmp_path / "data")
    try:
        assert versions(ledger) == [m.version for m in migrations()]
        assert ledger.schema_version() == code_version()
    finally:
        ledger.close()


def test_an_older_schema_is_refused_until_gateway_migrate_upgrades_it(tmp_path, ledger_url,
                                                                      capsys):
    make_version_1(ledger_url, tmp_path / "data")
    with pytest.raises(SchemaMismatch, match="gateway migrate"):
        open_ledger(ledger_url, tmp_path / "data")

    assert main(["migrate", "--config", str(write_config(tmp_path, ledger_url))]) == 0

    out = capsys.readouterr().out
    assert "applied 0002_gateways" in out and "applied 0003" in out and "0001" not in out
    ledger = open_ledger(ledger_url, tmp_path / "data")
    try:
        assert ledger.schema_version() == code_version()
        if not ledger_url:  # what 0.2 stored is still there
            assert ledger.opt_out_rows("old@example.com")[0]["kind"] == "optout"
    finally:
        ledger.close()


def test_gateway_migrate_on_an_up_to_date_ledger_says_so(tmp_path, ledger_url, capsys):
    open_ledger(ledger_url, tmp_path / "data").close()

    assert main(["migrate", "--config", str(write_config(tmp_path, ledger_url))]) == 0

    assert "up to date" in capsys.readouterr().out


def test_gateway_run_on_an_older_schema_stops_with_one_line_naming_gateway_migrate(
        tmp_path, ledger_url, capsys):
    make_version_1(ledger_url, tmp_path / "data")

    assert main(["run", "--config", str(write_config(tmp_path, ledger_url))]) == 3

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gateway migrate" in err[0]
    assert "***" in err[0] or "password" not in err[0]


def test_a_newer_schema_is_refused_naming_the_newer_code(tmp_path, ledger_url):
    ledger = open_ledger(ledger_url, tmp_path / "data")
    with ledger._conn() if ledger_url else _sqlite(ledger) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 'later')")
    ledger.close()

    with pytest.raises(SchemaMismatch, match="newer"):
        open_ledger(ledger_url, tmp_path / "data")


def test_gateway_run_on_a_newer_schema_stops_with_one_line_naming_gateway_migrate(
        tmp_path, ledger_url, capsys):
    ledger = open_ledger(ledger_url, tmp_path / "data")
    with ledger._conn() if ledger_url else _sqlite(ledger) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 'later')")
    ledger.close()

    assert main(["run", "--config", str(write_config(tmp_path, ledger_url))]) == 3

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gateway migrate" in err[0] and "newer" in err[0]


class _sqlite:
    def __init__(self, ledger):
        self.conn = ledger.conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        return False


def test_gateways_starting_together_on_an_empty_database_create_the_schema_once(
        tmp_path, ledger_url):
    opened, errors = [], []

    def start(i: int) -> None:
        try:
            opened.append(open_ledger(ledger_url, tmp_path / "data"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert versions(opened[0]) == [m.version for m in migrations()]
    finally:
        for ledger in opened:
            ledger.close()


# -- gateway ledger copy ------------------------------------------------------------------


def fill(ledger) -> None:
    ledger.record_evidence(parse_evidence({
        "org": "acme", "channel": "email", "address": PERSON, "basis": "soft_opt_in",
        "obtained_at": "2026-01-10T10:00:00Z", "source": "checkout", "context": "sale",
        "categories": ["lawnmowers", "decking"], "opt_out_offered": True}, REGIONS))
    ledger.record_opt_out("acme", "email", PERSON, source="link", method="link",
                          token="tok1")
    ledger.record_opt_out("acme", "email", PERSON, kind="optin", source="again")
    ledger.write_batch(
        tokens=[TokenRecord("tok1", "acme", "email", PERSON, "acme-news", "<m1@x>", None)],
        decisions=[(Decision(True, "soft_opt_in", "sale"), DecisionRecord(
            "acme", "email", PERSON, "acme-news", "marketing", "commercial", "decking",
            "<m1@x>", "enforce"))] * 3)


def filled_sqlite_ledger(tmp_path: Path) -> Path:
    """An SQLite ledger holding `fill`'s records; the config that names it."""
    source = open_ledger("", tmp_path / "data")
    fill(source)
    source.close()
    return write_config(tmp_path)


@pytest.fixture
def pg_url(pg_cluster) -> str:
    return pg_cluster.new_database()


def audit(config: Path, capsys, person: str = PERSON) -> dict:
    assert main(["audit", person, "--config", str(config)]) == 0
    return json.loads(capsys.readouterr().out)


def test_ledger_copy_moves_every_record_with_its_id_and_time(tmp_path, pg_url, capsys):
    source_config = filled_sqlite_ledger(tmp_path)
    before = audit(source_config, capsys)

    assert main(["ledger", "copy", "--to", pg_url, "--quiet", "--config",
                 str(source_config)]) == 0

    out = capsys.readouterr().out
    assert "evidence: 1" in out and "optouts: 2" in out and "decisions: 3" in out
    assert "tokens: 1" in out and "suppression_key: 1" in out and "copied 8 records" in out
    (tmp_path / "pg").mkdir()
    after = audit(write_config(tmp_path / "pg", pg_url), capsys)
    assert after == before
    target = open_ledger(pg_url, tmp_path)
    try:  # new records go on after the copied ids
        assert target.record_opt_out("acme", "sms", "+447400123456") == 3
        assert target.token("tok1").address == PERSON
    finally:
        target.close()


def fill_newest_tables(config: Path) -> None:
    """Records in the tables added since 0.2: an erasure (suppressions, suppression_key), an
    ESP event, a webhook nonce and a sign-up."""
    assert main(["erase", "gone@example.com", "--channel", "email", "--org", "acme",
                 "--source", "request 7", "--config", str(config)]) == 0
    ledger = open_ledger("", config.parent / "data")
    try:
        ledger.record_optout_event({
            "provider": "sendgrid", "event_id": "ev1", "event_type": "unsubscribe",
            "event_at": "2026-01-11T09:00:00+00:00", "received_at": "2026-01-11T09:00:01+00:00",
            "method": "esp", "outcome": "recorded", "org": "acme", "stream": "acme-news",
            "address": PERSON, "optout_id": 1, "problem": "", "payload": "{}"})
        ledger.note_nonce("mailgun", "nonce-1", "2026-01-11T09:00:02+00:00",
                          "2026-01-01T00:00:00+00:00")
        ledger.add_subscription({
            "id": "sub1", "org": "acme", "channel": "email", "address": PERSON,
            "source": "form v3", "wording": "Yes, offers", "categories": '["decking"]',
            "requested_at": "2026-01-09T08:00:00+00:00", "requested_by": "127.0.0.1"})
    finally:
        ledger.close()


def every_row(ledger, tables) -> dict[str, list[tuple]]:
    return {t: [tuple(map(str, row)) for row in ledger._tuples(
        f"SELECT * FROM {t} ORDER BY 1, 2")] for t in tables}  # noqa: S608 - our names


def test_ledger_copy_moves_every_table_the_ledger_has_including_the_newest(
        tmp_path, pg_url, capsys):
    source_config = filled_sqlite_ledger(tmp_path)
    fill_newest_tables(source_config)
    capsys.readouterr()
    source = open_ledger("", tmp_path / "data")
    tables = [r[0] for r in source._tuples(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        # ledger_change_count: SQLite's own bookkeeping of changes (migration 0009)
        "AND name NOT IN ('gateways', 'schema_migrations', 'ledger_change_count')")]
    before = every_row(source, tables)
    source.close()
    assert all(before[t] for t in tables), "every table holds a record to copy"
    trails = [audit(source_config, capsys, who) for who in (PERSON, "gone@example.com")]

    assert main(["ledger", "copy", "--to", pg_url, "--quiet", "--config",
                 str(source_config)]) == 0

    out = capsys.readouterr().out
    for table in tables:
        assert f"{table}: {len(before[table])}" in out
    target = open_ledger(pg_url, tmp_path)
    try:
        assert every_row(target, tables) == before
    finally:
        target.close()
    (tmp_path / "pg").mkdir()
    target_config = write_config(tmp_path / "pg", pg_url)
    assert [audit(target_config, capsys, who)
            for who in (PERSON, "gone@example.com")] == trails


def test_ledger_copy_takes_a_target_a_gateway_has_opened_with_the_same_key(
        tmp_path, pg_url, capsys):
    source_config = filled_sqlite_ledger(tmp_path)
    before = audit(source_config, capsys)
    (tmp_path / "pg").mkdir()
    target_config = write_config(tmp_path / "pg", pg_url)
    audit(target_config, capsys)  # notes the key in the target, as `gateway run` does

    assert main(["ledger", "copy", "--to", pg_url, "--quiet", "--config",
                 str(source_config)]) == 0

    capsys.readouterr()
    assert audit(target_config, capsys) == before


def test_ledger_copy_refuses_a_target_that_holds_records(tmp_path, pg_url, capsys):
    source_config = filled_sqlite_ledger(tmp_path)
    target = open_ledger(pg_url, tmp_path)
    target.record_opt_out("acme", "email", "someone@example.com")
    target.close()

    assert main(["ledger", "copy", "--to", pg_url, "--quiet", "--config",
                 str(source_config)]) == 2

    assert "not empty" in capsys.readouterr().err
    target = open_ledger(pg_url, tmp_path)
    try:
        assert target.evidence_for(PERSON) == ()
    finally:
        target.close()


def test_gateway_run_on_an_unreachable_ledger_stops_with_one_line_saying_why(
        tmp_path, capsys):
    from gwtest import free_port

    url = f"postgresql://gateway:pw-never-shown@127.0.0.1:{free_port()}/consent"

    assert main(["run", "--config", str(write_config(tmp_path, url))]) == 2

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot connect to the ledger" in err[0]
    assert "Connection refused" in err[0] and "[ledger] url" in err[0]
    assert "pw-never-shown" not in err[0]
