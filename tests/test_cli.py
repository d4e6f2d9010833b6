"""The `gateway` command (contract: "Package and command"): consent import, check,
optout and audit against a config in a temporary directory. Most tests call
gateway.cli.main in-process; one runs the installed command."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.evidence import parse_evidence
from gateway.ledger import DecisionRecord, Ledger
from gateway.policy import Decision

GATEWAY = Path(sys.executable).with_name("gateway")
ADDRESS = "jane.doe@example.com"
REGIONS = {"acme": "GB", "owls": "GB"}

CONFIG = """\
[gateway]
data_dir = "data"

[[org]]
id = "acme"
name = "Acme Garden Ltd"
similar = [["lawnmowers", "hedge-trimmers", "garden-tools"], ["decking", "fencing"]]

[[org]]
id = "owls"
name = "Save the Owls"
type = "charity"

[[stream]]
id = "acme-news"
org = "acme"
category = "garden-tools"
"""

HEADER = "org,channel,address,basis,obtained_at,source,categories,context,opt_out_offered\n"
GOOD_ROWS = (
    "acme,email,Jane.Doe@Example.com,soft_opt_in,2026-01-10T10:00:00Z,checkout,"
    "lawnmowers;decking,sale,true\n"
    "acme,sms,07400 123456,consent,2026-01-10T10:00:00+01:00,signup form,,,\n"
)


@pytest.fixture
def cfg(tmp_path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG, "utf-8")
    return path


@pytest.fixture
def ledger(tmp_path, cfg):
    """The ledger the commands use (data_dir resolves beside the config file)."""
    book = Ledger(tmp_path / "data")
    yield book
    book.close()


def write_csv(tmp_path: Path, text: str, name: str = "people.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return path


def gateway(cfg: Path, *argv: str) -> int:
    return main([*argv, "--config", str(cfg)])


def seed(ledger: Ledger, **fields) -> int:
    base = {"org": "acme", "channel": "email", "address": ADDRESS, "basis": "soft_opt_in",
            "obtained_at": "2026-01-10T10:00:00Z", "source": "checkout, opt-out box shown",
            "categories": ["lawnmowers"], "context": "sale", "opt_out_offered": True}
    base.update(fields)
    return ledger.record_evidence(parse_evidence(base, REGIONS), "test")


# -- consent import ---------------------------------------------------------------------


def test_import_stores_every_good_row_and_prints_a_summary(tmp_path, cfg, ledger, capsys):
    path = write_csv(tmp_path, HEADER + GOOD_ROWS)

    assert gateway(cfg, "consent", "import", str(path), "--quiet") == 0

    assert f"imported 2 record(s), rejected 0 row(s) from {path}" in capsys.readouterr().out
    (soft,) = ledger.evidence_for(ADDRESS, "email", "acme")
    assert soft.categories == ("lawnmowers", "decking") and soft.opt_out_offered is True
    (texts,) = ledger.evidence_for("+447400123456", "sms", "acme")
    assert texts.basis == "consent" and texts.obtained_at.hour == 9


def test_import_reports_each_bad_row_with_its_line_and_stores_none_of_it(
        tmp_path, cfg, ledger, capsys):
    rows = (HEADER + GOOD_ROWS
            + "acme,email,not-an-address,consent,2026-01-10T10:00:00Z,form,,,\n"    # line 4
            + "acme,email,tom@example.com,consent,2026-01-10T10:00:00,form,,,\n"    # line 5
            + "acme,sms,07700 900123,consent,2026-01-10T10:00:00Z,form,,,\n"        # line 6
            + "acme,email,amy@example.com,soft_opt_in,2026-01-10T10:00:00Z,shop,,,\n")  # 7
    path = write_csv(tmp_path, rows)

    code = gateway(cfg, "consent", "import", str(path), "--quiet")

    out, err = capsys.readouterr()
    assert code == 1
    rejected = [line for line in err.splitlines() if "rejected:" in line]
    assert [line.split(": rejected")[0] for line in rejected] == [
        f"{path}:4", f"{path}:5", f"{path}:6", f"{path}:7"]
    assert "address" in rejected[0] and "obtained_at" in rejected[1]
    assert "address" in rejected[2] and "categories" in rejected[3]
    assert "imported 2 record(s), rejected 4 row(s)" in out
    stored = {r["address"] for r in ledger.iter_all("evidence")}
    assert stored == {ADDRESS, "+447400123456"}


def test_import_rejects_a_row_with_more_cells_than_columns(tmp_path, cfg, ledger, capsys):
    path = write_csv(tmp_path, HEADER + GOOD_ROWS + GOOD_ROWS.splitlines()[1] + ",extra\n")

    assert gateway(cfg, "consent", "import", str(path), "--quiet") == 1

    assert f"{path}:4: rejected: more cells than header columns" in capsys.readouterr().err


def test_import_counts_lines_of_a_quoted_multi_line_cell(tmp_path, cfg, capsys):
    rows = (HEADER
            + 'acme,email,a@example.com,consent,2026-01-10T10:00:00Z,"form\nv2",,,\n'  # 2-3
            + "acme,email,bad,consent,2026-01-10T10:00:00Z,form,,,\n")  # line 4
    path = write_csv(tmp_path, rows)

    gateway(cfg, "consent", "import", str(path), "--quiet")

    assert f"{path}:4: rejected: address" in capsys.readouterr().err


def test_import_with_org_fills_rows_without_an_org(tmp_path, cfg, ledger):
    path = write_csv(tmp_path, "channel,address,basis,obtained_at,source\n"
                               "email,jane.doe@example.com,consent,2026-01-10T10:00:00Z,form\n")

    assert gateway(cfg, "consent", "import", str(path), "--org", "owls", "--quiet") == 0

    assert [e.org for e in ledger.evidence_for(ADDRESS)] == ["owls"]


def test_import_of_a_file_with_an_unknown_column_stops_with_a_clear_error(
        tmp_path, cfg, ledger, capsys):
    path = write_csv(tmp_path, HEADER.replace("source", "colour") + GOOD_ROWS)

    assert gateway(cfg, "consent", "import", str(path), "--quiet") == 2

    err = capsys.readouterr().err
    assert "unknown column(s) colour" in err and str(path) in err
    assert list(ledger.iter_all("evidence")) == []


def test_import_of_a_missing_file_stops_with_a_clear_error(tmp_path, cfg, capsys):
    assert gateway(cfg, "consent", "import", str(tmp_path / "nowhere.csv")) == 2

    assert "nowhere.csv: no such file" in capsys.readouterr().err


def test_import_runs_as_the_installed_command(tmp_path, cfg):
    write_csv(tmp_path, HEADER + GOOD_ROWS)

    done = subprocess.run([str(GATEWAY), "consent", "import", "people.csv"], cwd=tmp_path,
                          check=False, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert "imported 2 record(s), rejected 0 row(s) from people.csv" in done.stdout


# -- check ------------------------------------------------------------------------------


def test_check_exits_0_and_says_allow_when_the_rules_allow(cfg, ledger, capsys):
    seed(ledger)

    assert gateway(cfg, "check", ADDRESS, "--org", "acme", "--category", "lawnmowers") == 0

    out = capsys.readouterr().out
    assert out.startswith("ALLOW soft_opt_in")
    assert "relied on evidence #1" in out


def test_check_exits_1_and_says_block_when_nothing_is_recorded(cfg, ledger, capsys):
    assert gateway(cfg, "check", ADDRESS, "--org", "acme") == 1

    assert capsys.readouterr().out.startswith("BLOCK no_consent")


def test_check_with_a_region_for_an_org_that_maps_none_names_it_and_keeps_the_rule_set(
        cfg, ledger, capsys):
    assert gateway(cfg, "check", ADDRESS, "--org", "acme", "--region", "de") == 1
    assert "rule set uk-pecr · region DE from given" in capsys.readouterr().out
    assert gateway(cfg, "check", ADDRESS, "--org", "acme", "--region", "DE", "--json") == 1
    result = json.loads(capsys.readouterr().out)
    assert (result["ruleset"], result["region"], result["region_source"]) == (
        "uk-pecr", "DE", "given")


def test_check_json_reports_the_decision_and_the_evidence_relied_on(cfg, ledger, capsys):
    record_id = seed(ledger)

    gateway(cfg, "check", "Jane.Doe@EXAMPLE.com", "--org", "acme", "--json")

    result = json.loads(capsys.readouterr().out)
    assert (result["allowed"], result["reason"], result["address"]) == (
        True, "soft_opt_in", ADDRESS)
    assert (result["channel"], result["category"], result["ruleset"]) == (
        "email", "garden-tools", "uk-pecr")
    assert [e["id"] for e in result["evidence"]] == [str(record_id)]


def test_check_of_a_category_not_similar_blocks_with_its_reason(cfg, ledger, capsys):
    seed(ledger)

    assert gateway(cfg, "check", ADDRESS, "--org", "acme", "--category", "decking",
                   "--json") == 1

    assert json.loads(capsys.readouterr().out)["reason"] == "soft_opt_in_not_similar"


def test_check_of_a_service_message_allows(cfg, ledger, capsys):
    assert gateway(cfg, "check", "07400 123456", "--org", "acme", "--purpose", "service") == 0

    assert "service_message" in capsys.readouterr().out


def test_check_for_an_unknown_org_is_a_usage_error(cfg, ledger, capsys):
    assert gateway(cfg, "check", ADDRESS, "--org", "nobody") == 2

    assert "unknown org 'nobody'" in capsys.readouterr().err


def test_check_of_an_invalid_number_is_a_usage_error(cfg, ledger, capsys):
    assert gateway(cfg, "check", "07700 900123", "--org", "acme") == 2

    assert "invalid address" in capsys.readouterr().err


def test_a_command_with_a_bad_config_exits_3_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.replace('org = "acme"', 'org = "bloom"'), "utf-8")

    assert main(["check", ADDRESS, "--org", "acme", "--config", str(bad)]) == 3

    err = capsys.readouterr().err
    assert "stream[0].org" in err and str(bad) in err


# -- optout -----------------------------------------------------------------------------


def test_optout_then_check_blocks_as_opted_out(cfg, ledger, capsys):
    seed(ledger)

    assert gateway(cfg, "optout", ADDRESS, "--org", "acme") == 0
    assert gateway(cfg, "check", ADDRESS, "--org", "acme", "--json") == 1

    out = capsys.readouterr().out
    assert "opt-out #1 recorded" in out
    assert json.loads(out[out.index("{"):])["reason"] == "opted_out"


def test_optout_of_every_org_blocks_each_org(cfg, ledger, capsys):
    seed(ledger)
    seed(ledger, org="owls", basis="consent", categories=[], context=None,
         opt_out_offered=None)

    gateway(cfg, "optout", ADDRESS, "--org", "*", "--channel", "email")

    assert gateway(cfg, "check", ADDRESS, "--org", "acme") == 1
    assert gateway(cfg, "check", ADDRESS, "--org", "owls") == 1
    assert capsys.readouterr().out.count("BLOCK opted_out") == 2


def test_optout_of_one_channel_leaves_the_other_channel_alone(cfg, ledger, capsys):
    seed(ledger, channel="sms", address="+447400123456")

    gateway(cfg, "optout", "07400 123456", "--org", "acme", "--channel", "email")

    assert gateway(cfg, "check", "+447400123456", "--org", "acme") == 0


def test_optout_stores_the_normalised_address(cfg, ledger, capsys):
    gateway(cfg, "optout", "07400 123456", "--org", "acme")

    (stored,) = ledger.opt_outs_for("+447400123456")
    assert (stored.channel, stored.method) == ("all", "cli")


# -- audit ------------------------------------------------------------------------------


def record_history(ledger: Ledger) -> None:
    seed(ledger)
    ledger.record_opt_out("acme", "email", ADDRESS, method="http", message_id="<m1@x>")
    ledger.record_decision(
        Decision(False, "opted_out", "opted out of email", ruleset="uk-pecr"),
        DecisionRecord(org="acme", channel="email", address=ADDRESS, stream="acme-news",
                       purpose="marketing", nature="commercial", category="lawnmowers",
                       message_id="<m2@x>", mode="enforce"))


def test_audit_prints_the_whole_trail_as_json(cfg, ledger, capsys):
    record_history(ledger)

    assert gateway(cfg, "audit", "Jane.Doe@example.com", "--org", "acme") == 0

    trail = json.loads(capsys.readouterr().out)
    assert trail["address"] == ADDRESS
    assert [e["basis"] for e in trail["evidence"]] == ["soft_opt_in"]
    assert [(o["kind"], o["method"]) for o in trail["opt_outs"]] == [("optout", "http")]
    assert [(d["reason"], d["message_id"]) for d in trail["decisions"]] == [
        ("opted_out", "<m2@x>")]
    assert all(d["at"] for d in trail["decisions"])


def test_audit_as_csv_has_one_row_per_event_oldest_first(cfg, ledger, capsys):
    record_history(ledger)

    assert gateway(cfg, "audit", ADDRESS, "--format", "csv") == 0

    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["kind"] for r in rows] == ["evidence", "optout", "decision"]
    assert rows == sorted(rows, key=lambda r: r["time"])
    assert rows[2]["reason"] == "opted_out" and rows[2]["message_id"] == "<m2@x>"


def test_audit_of_an_unknown_person_prints_an_empty_trail(cfg, ledger, capsys):
    assert gateway(cfg, "audit", "nobody@example.com") == 0

    trail = json.loads(capsys.readouterr().out)
    assert trail["evidence"] == trail["opt_outs"] == trail["decisions"] == []


def test_import_rejects_a_row_dated_in_the_future_or_without_a_source_by_line(
        tmp_path, cfg, ledger, capsys):
    rows = (HEADER + GOOD_ROWS
            + "acme,email,tom@example.com,consent,2030-01-10T10:00:00Z,form,,,\n"  # line 4
            + "acme,email,amy@example.com,consent,2026-01-10T10:00:00Z,,,,\n")    # line 5
    path = write_csv(tmp_path, rows)

    code = gateway(cfg, "consent", "import", str(path), "--quiet")

    err = capsys.readouterr().err
    assert code == 1
    assert f"{path}:4: rejected: obtained_at" in err and "future" in err
    assert f"{path}:5: rejected: source" in err
    assert ledger.evidence_for("tom@example.com") == ledger.evidence_for("amy@example.com") == ()


def test_gateway_run_names_where_the_ledger_is_without_its_password(tmp_path):
    from gateway import config
    from gateway.cli import ledger_location

    shared = config.parse('[ledger]\nurl = "postgresql://gw:s3cret@db:5432/consent"\n', None,
                          tmp_path)
    local = config.parse("", None, tmp_path)

    assert ledger_location(shared) == "PostgreSQL postgresql://gw:***@db:5432/consent"
    assert ledger_location(local) == str(tmp_path / "var" / "ledger.db")


# -- rule sets per recipient (docs/rulesets.md) ------------------------------------------

WORLD_CONFIG = CONFIG.replace('name = "Acme Garden Ltd"\n', 'name = "Acme Garden Ltd"\n'
                              'rulesets = { default = "uk-pecr", EU = "eu-eprivacy", '
                              'US = "us", CA = "ca-casl" }\n'
                              'postal_address = "1 Garden Way, Leeds"\n'
                              'contact = "hello@acme.test"\n')


@pytest.fixture
def world_cfg(tmp_path) -> Path:
    path = tmp_path / "world.toml"  # beside `cfg`'s, so both use the same data dir
    path.write_text(WORLD_CONFIG, "utf-8")
    return path


def test_check_names_the_rule_set_the_region_and_where_it_came_from(world_cfg, ledger,
                                                                     capsys):
    seed(ledger, context="negotiation")

    assert gateway(world_cfg, "check", ADDRESS, "--org", "acme", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["ruleset"], result["region"], result["region_source"], result["reason"]) \
        == ("uk-pecr", "GB", "default", "soft_opt_in")

    assert gateway(world_cfg, "check", ADDRESS, "--org", "acme", "--region", "at") == 1
    out = capsys.readouterr().out
    assert out.startswith("BLOCK soft_opt_in_no_sale")
    assert "rule set eu-eprivacy · region AT from given" in out


def test_check_at_a_time_decides_as_then(world_cfg, ledger, capsys):
    seed(ledger, context="enquiry", obtained_at="2026-01-10T10:00:00Z")

    assert gateway(world_cfg, "check", ADDRESS, "--org", "acme", "--region", "CA",
                   "--at", "2026-07-12T10:00:00Z", "--json") == 0
    assert json.loads(capsys.readouterr().out)["reason"] == "implied_enquiry"
    assert gateway(world_cfg, "check", ADDRESS, "--org", "acme", "--region", "CA",
                   "--at", "2026-07-13T10:00:00Z", "--json") == 1
    assert json.loads(capsys.readouterr().out)["reason"] == "implied_expired"


def test_check_of_a_text_at_night_in_new_york_says_when_it_would_go_and_exits_0(
        world_cfg, ledger, capsys):
    seed(ledger, channel="sms", address="+12125550100", basis="consent", written=True,
         categories=[], context=None, opt_out_offered=None)

    assert gateway(world_cfg, "check", "+12125550100", "--org", "acme",
                   "--at", "2026-06-02T02:00:00Z", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["outcome"], result["reason"], result["send_at"]) == (
        "defer", "quiet_hours", "2026-06-02T12:00:00+00:00")
    assert (result["ruleset"], result["region"], result["region_source"]) == (
        "us", "US", "number")
    assert gateway(world_cfg, "check", "+12125550100", "--org", "acme",
                   "--at", "2026-06-02T02:00:00Z") == 0
    out = capsys.readouterr().out
    assert out.startswith("DEFER quiet_hours")
    assert "would be sent at 2026-06-02T12:00:00+00:00" in out


def test_check_explains_the_reason_code_in_one_line(world_cfg, ledger, capsys):
    assert gateway(world_cfg, "check", "+12125550100", "--org", "acme") == 1
    assert "(no_written_consent: marketing texts need a signed written consent naming " \
           "this org)" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--region", "Canada"], ["--region", "UK"],
                                  ["--at", "tomorrow"]])
def test_check_with_a_bad_region_or_time_is_a_usage_error(world_cfg, ledger, capsys, argv):
    assert gateway(world_cfg, "check", ADDRESS, "--org", "acme", *argv) == 2
    assert "error:" in capsys.readouterr().err
