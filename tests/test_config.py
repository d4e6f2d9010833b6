"""Configuration (contract: "Configuration (TOML)"): the built-in defaults are the
shipped example, and a bad config stops start-up with one message naming the key, the
file and the line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = Path(sys.executable).with_name("gateway")
SECTIONS = ("gateway", "smtp", "http", "unsubscribe", "delivery", "dkim", "sms", "privacy")

GOOD = """\
[gateway]
data_dir = "data"

[smtp]
listen = "127.0.0.1:2525"
trusted_networks = ["192.0.2.0/24"]

[http]
listen = "127.0.0.1:8025"
admin_token = "a-long-random-admin-token"

[unsubscribe]
secret = "a-long-random-secret"

[delivery]
upstream = "maildir:outbox"
max_age = "5d"

[[org]]
id = "acme"
name = "Acme Garden Ltd"
type = "commercial"

[[stream]]
id = "acme-news"
org = "acme"
smtp_username = "acme-news"
smtp_password = "news-pass"
api_key = "sk_news"
"""

SECOND_STREAM = """
[[stream]]
id = "acme-offers"
org = "acme"
smtp_username = "acme-offers"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text, "utf-8")
    return path


def edit(old: str, new: str, text: str = GOOD) -> str:
    assert text.count(old) == 1, f"{old!r} must occur once in the config"
    return text.replace(old, new)


def line_number(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the `occurrence`-th line containing `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


def refused(tmp_path: Path, text: str) -> tuple[ConfigError, Path]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    return caught.value, path


def assert_names(error: ConfigError, path: Path, key: str, line: int | None = None) -> None:
    message = str(error)
    assert error.key == key
    assert key in message
    assert str(path) in message
    if line is not None:
        assert error.line == line
        assert f"{path}:{line}:" in message


# -- the defaults -----------------------------------------------------------------------


def test_the_good_config_of_these_tests_loads(tmp_path):
    settings = config.load(write(tmp_path, GOOD))

    assert [s.id for s in settings.streams] == ["acme-news"]


def test_the_packaged_example_is_the_example_at_the_top_of_the_checkout():
    assert config.example_text() == (ROOT / "config.example.toml").read_text("utf-8")


def test_running_without_a_config_file_uses_the_example_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    defaults = config.load(None)

    example = config.parse((ROOT / "config.example.toml").read_text("utf-8"), None, tmp_path)
    assert defaults == example


@pytest.mark.parametrize("section", SECTIONS)
def test_each_default_in_the_code_equals_the_value_in_the_example(tmp_path, section):
    from_code = config.parse("", None, tmp_path)
    from_example = config.parse(config.example_text(), None, tmp_path)

    assert getattr(from_code, section) == getattr(from_example, section)


def test_the_built_in_defaults_listen_on_loopback_and_write_under_var(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    defaults = config.load(None)

    assert defaults.smtp.listen.is_loopback and defaults.http.listen.is_loopback
    assert defaults.gateway.data_dir == tmp_path / "var"
    assert defaults.delivery.upstream == f"maildir:{tmp_path / 'var' / 'outbox'}"
    assert defaults.sms.outbox == tmp_path / "var" / "sms-outbox.jsonl"


# -- bad configs ------------------------------------------------------------------------


def test_an_unknown_top_level_key_is_refused_naming_it(tmp_path):
    text = 'colour = "green"\n' + GOOD
    error, path = refused(tmp_path, text)

    assert_names(error, path, "colour", line=1)


def test_an_unknown_key_in_a_section_is_refused_naming_it(tmp_path):
    text = edit('listen = "127.0.0.1:2525"', 'listen = "127.0.0.1:2525"\nlisten_port = 25')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "smtp.listen_port", line=line_number(text, "listen_port"))
    assert "unknown key" in str(error)


def test_an_unknown_key_in_a_stream_is_refused_naming_the_stream_and_key(tmp_path):
    text = GOOD + 'colour = "green"\n'
    error, path = refused(tmp_path, text)

    assert_names(error, path, "stream[0].colour", line=line_number(text, "colour"))


def test_a_value_of_the_wrong_type_is_refused_naming_the_key_and_the_types(tmp_path):
    text = edit('max_age = "5d"', 'max_age = "5d"\nworkers = "four"')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "delivery.workers", line=line_number(text, "workers"))
    assert "expected an integer, got a string" in str(error)


def test_a_boolean_where_a_number_belongs_is_refused(tmp_path):
    text = edit('max_age = "5d"', 'max_age = "5d"\nworkers = true')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "delivery.workers", line=line_number(text, "workers"))


def test_a_section_given_as_a_plain_value_is_refused_naming_it(tmp_path):
    text = "dkim = 5\n" + GOOD
    error, path = refused(tmp_path, text)

    assert_names(error, path, "dkim", line=1)
    assert "expected a table" in str(error)


def test_a_stream_naming_no_org_is_refused(tmp_path):
    text = edit('org = "acme"', 'org = "bloom"')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "stream[0].org", line=line_number(text, 'org = "bloom"'))
    assert "bloom" in str(error)


def test_an_org_type_outside_the_list_is_refused_naming_the_choices(tmp_path):
    text = edit('type = "commercial"', 'type = "company"')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "org[0].type", line=line_number(text, 'type = "company"'))
    assert "commercial, charity, political, nonprofit" in str(error)


@pytest.mark.parametrize("listen", [
    "127.0.0.1", "127.0.0.1:", ":2525", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:smtp",
    "::1:2525", "[::1:2525", "[1::2::3]:2525", "mail host:2525", "",
])
def test_a_malformed_listen_address_is_refused(tmp_path, listen):
    text = edit('listen = "127.0.0.1:2525"', f'listen = "{listen}"')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "smtp.listen", line=line_number(text, f'listen = "{listen}"'))


def test_a_listen_address_given_as_a_number_is_refused(tmp_path):
    text = edit('listen = "127.0.0.1:8025"', "listen = 8025")
    error, path = refused(tmp_path, text)

    assert_names(error, path, "http.listen", line=line_number(text, "listen = 8025"))


def test_an_ipv6_listen_address_in_brackets_is_accepted(tmp_path):
    settings = config.load(write(tmp_path, edit("127.0.0.1:2525", "[::1]:2525")))

    assert (settings.smtp.listen.host, settings.smtp.listen.port) == ("::1", 2525)


def test_two_streams_with_one_id_are_refused(tmp_path):
    text = GOOD + SECOND_STREAM.replace("acme-offers", "acme-news", 1)
    error, path = refused(tmp_path, text)

    assert_names(error, path, "stream[1].id", line=line_number(text, 'id = "acme-news"', 2))
    assert "duplicate" in str(error)


def test_two_streams_with_one_smtp_username_are_refused(tmp_path):
    text = GOOD + SECOND_STREAM.replace('smtp_username = "acme-offers"',
                                        'smtp_username = "acme-news"')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "stream[1].smtp_username",
                 line=line_number(text, 'smtp_username = "acme-news"', 2))


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "10.0.0", "not-a-network", "::1/129"])
def test_a_trusted_network_that_is_not_a_cidr_is_refused(tmp_path, cidr):
    text = edit('"192.0.2.0/24"', f'"{cidr}"')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "smtp.trusted_networks",
                 line=line_number(text, "trusted_networks"))
    assert cidr in str(error)


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "10.0.0.0/7", "::/0", "2001:db8::/31"])
def test_a_trusted_network_wider_than_a_slash_8_or_32_is_refused(tmp_path, cidr):
    text = edit('"192.0.2.0/24"', f'"192.0.2.0/24", "{cidr}"')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "smtp.trusted_networks",
                 line=line_number(text, "trusted_networks"))
    assert cidr in str(error) and "allow_wide_trusted_networks" in str(error)


@pytest.mark.parametrize("cidr", ["10.0.0.0/8", "127.0.0.0/8", "2001:db8::/32", "::1/128"])
def test_a_trusted_network_of_a_slash_8_or_32_or_narrower_is_accepted(tmp_path, cidr):
    settings = config.load(write(tmp_path, edit('"192.0.2.0/24"', f'"{cidr}"')))

    assert [str(n) for n in settings.smtp.trusted_networks] == [cidr]


def test_a_wide_trusted_network_is_accepted_when_explicitly_allowed(tmp_path):
    text = edit('trusted_networks = ["192.0.2.0/24"]',
                'trusted_networks = ["0.0.0.0/0"]\nallow_wide_trusted_networks = true')
    settings = config.load(write(tmp_path, text))

    assert [str(n) for n in settings.smtp.trusted_networks] == ["0.0.0.0/0"]


def test_allow_wide_trusted_networks_must_be_a_boolean(tmp_path):
    text = edit('trusted_networks = ["192.0.2.0/24"]',
                'trusted_networks = ["192.0.2.0/24"]\nallow_wide_trusted_networks = "yes"')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "smtp.allow_wide_trusted_networks",
                 line=line_number(text, "allow_wide_trusted_networks"))


@pytest.mark.parametrize("upstream", [
    "http://relay.example:25", "smtp://", "smtp://relay.example:port",
    "smtp://relay.example:99999", "smtp://relay.example:25?tls=maybe", "relay.example:25",
])
def test_an_upstream_that_is_neither_maildir_nor_smtp_url_is_refused(tmp_path, upstream):
    text = edit('upstream = "maildir:outbox"', f'upstream = "{upstream}"')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "delivery.upstream", line=line_number(text, "upstream ="))


@pytest.mark.parametrize("duration", ["5 days", "1w", "-1d", "1.5h", ""])
def test_a_duration_that_is_not_a_number_and_unit_is_refused(tmp_path, duration):
    text = edit('max_age = "5d"', f'max_age = "{duration}"')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "delivery.max_age", line=line_number(text, "max_age ="))


def test_a_public_listener_with_the_example_admin_token_is_refused(tmp_path):
    text = edit('admin_token = "a-long-random-admin-token"', 'admin_token = "change-me"',
                edit('listen = "127.0.0.1:8025"', 'listen = "0.0.0.0:8025"'))
    error, path = refused(tmp_path, text)

    assert_names(error, path, "http.admin_token", line=line_number(text, "admin_token"))
    assert "example value" in str(error)


def test_a_public_listener_with_the_example_unsubscribe_secret_is_refused(tmp_path):
    text = edit('secret = "a-long-random-secret"', 'secret = "change-me-too"',
                edit('listen = "127.0.0.1:2525"', 'listen = "0.0.0.0:2525"'))
    error, path = refused(tmp_path, text)

    assert_names(error, path, "unsubscribe.secret", line=line_number(text, "secret ="))


def test_a_public_listener_with_the_example_stream_password_is_refused(tmp_path):
    text = edit('smtp_password = "news-pass"', 'smtp_password = "secret"',
                edit('listen = "127.0.0.1:2525"', 'listen = "192.0.2.10:2525"'))
    error, path = refused(tmp_path, text)

    assert_names(error, path, "stream[0].smtp_password",
                 line=line_number(text, "smtp_password"))


def test_a_public_listener_with_real_secrets_is_accepted(tmp_path):
    text = edit('listen = "127.0.0.1:2525"', 'listen = "0.0.0.0:2525"')

    settings = config.load(write(tmp_path, text))

    assert not settings.smtp.listen.is_loopback


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path):
    text = edit('max_age = "5d"', 'max_age = "5d')
    error, path = refused(tmp_path, text)

    assert str(path) in str(error)
    assert f"line {line_number(text, 'max_age')}" in str(error)


def test_a_missing_config_file_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path / "nowhere.toml")

    assert "nowhere.toml" in str(caught.value)


# -- through the command ----------------------------------------------------------------


def test_gateway_run_with_a_bad_config_exits_with_one_clear_line(tmp_path):
    text = edit('org = "acme"', 'org = "bloom"')
    path = write(tmp_path, text)

    done = subprocess.run([str(GATEWAY), "run", "--config", str(path)], cwd=tmp_path,
                          check=False, capture_output=True, text=True, timeout=30)

    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "stream[0].org" in lines[0]
    line = line_number(text, 'org = "bloom"')
    assert f"{path}:{line}:" in lines[0]
    assert done.stdout == ""
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("value", ["0", "65", '"many"', "true", "2.5"])
def test_a_bad_processes_count_is_refused(tmp_path, value):
    text = edit('data_dir = "data"', f'data_dir = "data"\nprocesses = {value}')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "gateway.processes", line=line_number(text, "processes"))
    assert 'from 1 to 64, or "auto"' in str(error)


def test_processes_is_one_by_default_else_a_count_or_one_per_core(tmp_path):
    import os

    from gateway.config import AUTO_PROCESSES

    for value, expected in (("3", 3), ('"auto"', min(AUTO_PROCESSES,
                                                       len(os.sched_getaffinity(0))))):
        path = write(tmp_path, edit('data_dir = "data"', f'data_dir = "data"\nprocesses = {value}'))
        assert config.load(path).gateway.processes == expected
    assert config.load(write(tmp_path, GOOD)).gateway.processes == 1  # the default


def test_a_public_listener_with_the_example_suppression_key_is_refused(tmp_path):
    text = edit('listen = "127.0.0.1:2525"', 'listen = "0.0.0.0:2525"') + (
        '\n[privacy]\nsuppression_key = "change-me-three"\n')
    error, path = refused(tmp_path, text)

    assert_names(error, path, "privacy.suppression_key",
                 line=line_number(text, "suppression_key ="))


@pytest.mark.parametrize("retention", ["12h", "3600", "1w"])
def test_a_decisions_retention_shorter_than_a_day_or_not_a_duration_is_refused(
        tmp_path, retention):
    text = GOOD + f'\n[privacy]\ndecisions_retention = "{retention}"\n'
    error, path = refused(tmp_path, text)

    assert_names(error, path, "privacy.decisions_retention",
                 line=line_number(text, "decisions_retention ="))


@pytest.mark.parametrize(("retention", "seconds"), [("0", 0), ("730d", 730 * 86400),
                                                    ("1d", 86400)])
def test_decisions_retention_reads_as_seconds_and_zero_keeps_forever(tmp_path, retention,
                                                                     seconds):
    settings = config.parse(GOOD + f'\n[privacy]\ndecisions_retention = "{retention}"\n',
                            None, tmp_path)
    assert settings.privacy.decisions_retention == seconds


@pytest.mark.parametrize(("value", "hint"), [("UK", "the United Kingdom is GB"),
                                             ("XX", "ISO 3166-1 alpha-2")])
def test_a_default_region_that_is_no_country_code_is_refused_naming_it(tmp_path, value, hint):
    # else the org's people would be placed in no mapped region: its default rule set
    text = edit('type = "commercial"\n', f'type = "commercial"\ndefault_region = "{value}"\n')
    error, path = refused(tmp_path, text)
    assert_names(error, path, "org[0].default_region", line_number(text, "default_region"))
    assert hint in str(error)
