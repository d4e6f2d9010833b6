"""Rule sets per recipient through a running gateway: the rule set, region and its source
recorded with every decision and shown by the contacts API; a copy waiting in the spool
past the end of a time-limited consent (CASL's implied consent) is decided again and
blocked."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import re
from datetime import UTC, datetime, timedelta

import aiohttp
import aiosmtplib
import pytest
from gwtest import SOFT_OPT_IN, make_settings, seed, wait_until_spool_is_empty
from pagehelpers import basic_auth
from test_redecision import DOWN, delivered_to, dsn_reasons, send, settings_for

from gateway import config, server
from gateway.errors import ConfigError
from gateway.runtime import Runtime

IDENTITY = dict(postal_address="1 Garden Way, Leeds LS1 1AA", contact="hello@acme.test")


def with_rulesets(settings, mapping: dict[str, str]):
    return dataclasses.replace(settings, orgs={k: dataclasses.replace(
        o, rulesets=mapping, **IDENTITY) for k, o in settings.orgs.items()})


async def contact(gw, channel: str, address: str) -> dict:
    http = gw.runtime.settings.http
    async with aiohttp.ClientSession() as session, session.get(
            f"{http.public_url}/api/v1/contacts/{channel}/{address}?org=acme",
            headers={"Authorization": f"Bearer {http.admin_token}"}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def status_page(gw, address: str) -> str:
    http = gw.runtime.settings.http
    async with aiohttp.ClientSession() as session, session.get(
            f"{http.public_url}/status", params={"address": address},
            headers=basic_auth(http.admin_token)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()


async def decided_again(gw, address: str, timeout: float = 30.0) -> list[dict]:
    """The person's decisions, newest first, once there is a second one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(trail := gw.runtime.ledger.decisions_for(address)) < 2:
        assert loop.time() < deadline, "the copy was never decided again"
        await asyncio.sleep(0.1)
    return trail


async def test_each_decision_records_the_rule_set_and_region_it_used(tmp_path, sink):
    settings = with_rulesets(settings_for(tmp_path, sink), {"default": "uk-pecr", "US": "us"})
    async with await server.start(settings) as gw:
        seed(gw.runtime, address="ann@example.com", basis="consent", region="US",
             source="signup form, New York store")
        await send(gw, ["ann@example.com", "ben@example.com"])
        await wait_until_spool_is_empty(gw)
        assert "ann@example.com" in delivered_to(sink)
        assert "ben@example.com" not in delivered_to(sink)
        [ann] = gw.runtime.ledger.decisions_for("ann@example.com")
        assert (ann["ruleset"], ann["region"], ann["region_source"], ann["reason"]) == (
            "us", "US", "evidence", "consent")
        [ben] = gw.runtime.ledger.decisions_for("ben@example.com")
        assert (ben["ruleset"], ben["region"], ben["region_source"], ben["reason"]) == (
            "uk-pecr", "GB", "default", "no_consent")
        shown = await contact(gw, "email", "ann@example.com")
        assert [(d["ruleset"], d["region"], d["region_source"]) for d in shown["decisions"]] \
            == [("us", "US", "evidence")]
        assert shown["consents"][0]["region"] == "US"
        html = await status_page(gw, "ann@example.com")
        decisions = re.search(r'<table id="trail-decisions">(.*?)</table>', html,
                              re.DOTALL).group(1)
        assert "us (US, from evidence)" in decisions
        assert "Org <strong>acme</strong> decides per recipient: default → uk-pecr, " \
               "US → us" in html
        row = re.search(r'<tr id="reason-not_opted_out"[^>]*>(.*?)</tr>', html,
                        re.DOTALL).group(1)
        assert "commercial email may go until the person opts out" in row


async def test_the_audit_trail_as_csv_names_each_decisions_rule_set_region_and_source(
        tmp_path, sink):
    settings = with_rulesets(settings_for(tmp_path, sink), {"default": "uk-pecr", "DE": "eu-de"})
    async with await server.start(settings) as gw:
        seed(gw.runtime, address="dora@example.com", basis="consent", region="DE",
             source="newsletter form, Berlin shop")  # never confirmed: eu-de blocks
        with pytest.raises(aiosmtplib.SMTPDataError, match="consent_unconfirmed"):
            await send(gw, ["dora@example.com"])
        http = gw.runtime.settings.http
        async with aiohttp.ClientSession() as session, session.get(
                f"{http.public_url}/api/v1/contacts/email/dora@example.com",
                params={"org": "acme", "format": "csv"},
                headers={"Authorization": f"Bearer {http.admin_token}"}) as resp:
            assert resp.status == 200, await resp.text()
            rows = list(csv.DictReader(io.StringIO(await resp.text())))
    [evidence] = [r for r in rows if r["kind"] == "evidence"]
    assert evidence["region"] == "DE"
    [decision] = [r for r in rows if r["kind"] == "decision"]
    assert (decision["reason"], decision["ruleset"], decision["region"],
            decision["region_source"]) == ("consent_unconfirmed", "eu-de", "DE", "evidence")


async def test_a_copy_waiting_in_the_spool_past_the_end_of_implied_consent_is_blocked(
        tmp_path, sink):
    """Accepted on a sale 730 days old less a few seconds (CASL: implied consent); the
    upstream is down until the window has closed; decided again, the copy is dropped."""
    sink.reply = DOWN
    settings = with_rulesets(settings_for(tmp_path, sink), {"default": "ca-casl"})
    sale = datetime.now(UTC) - timedelta(days=730) + timedelta(seconds=2)
    async with await server.start(settings) as gw:
        seed(gw.runtime, address="cal@example.com", **{**SOFT_OPT_IN,
                                                        "obtained_at": sale.isoformat()})
        await send(gw, ["cal@example.com"])
        [accepted] = gw.runtime.ledger.decisions_for("cal@example.com")
        assert (accepted["reason"], accepted["ruleset"]) == ("implied_purchase", "ca-casl")
        trail = await decided_again(gw, "cal@example.com")
        assert "cal@example.com" not in delivered_to(sink)
        assert (trail[0]["outcome"], trail[0]["reason"]) == ("blocked", "implied_expired")
    sink.reply = "250 OK"
    async with await server.start(settings) as gw:
        await wait_until_spool_is_empty(gw)  # the DSN goes once the upstream is back
    [(rcpt, block)] = dsn_reasons(sink)
    assert "cal@example.com" in rcpt and "implied_expired" in block


@pytest.mark.parametrize("mapping", [{"default": "ca-casl"}, {"default": "uk-pecr",
                                                             "DE": "eu-de"}])
def test_a_decision_that_can_lapse_or_move_rule_set_is_never_stamped_for_the_cheap_check(
        tmp_path, mapping):
    from gateway.consent import classify

    rt = Runtime.open(with_rulesets(make_settings(tmp_path), mapping))
    try:
        seed(rt, address="dee@example.com", basis="consent", source="form")
        decision, seen = rt.consent.assess(classify(rt.settings.stream("acme-news")),
                                           "email", "dee@example.com")
        assert decision.allowed and seen is None
    finally:
        rt.close()


def test_an_org_that_can_reach_casl_without_a_postal_address_stops_start_up(tmp_path):
    text = ('[[org]]\nid = "maple"\nname = "Maple"\ncontact = "hi@maple.test"\n'
            'rulesets = { default = "uk-pecr", CA = "ca-casl" }\n')
    with pytest.raises(ConfigError) as caught:
        config.parse(text, None, tmp_path)
    assert "org[0].postal_address" in str(caught.value)
    assert "ca-casl" in str(caught.value)


def test_an_org_whose_gateway_rule_set_is_us_needs_address_and_contact(tmp_path):
    text = '[gateway]\nruleset = "us"\n[[org]]\nid = "maple"\npostal_address = "1 Elm St"\n'
    with pytest.raises(ConfigError, match=r"org\[0\]\.contact"):
        config.parse(text, None, tmp_path)
    ok = text + 'contact = "https://maple.test/contact"\n'
    assert config.parse(ok, None, tmp_path).orgs["maple"].brand == "maple"


@pytest.mark.parametrize(("mapping", "problem"), [
    ('{ de = "eu-de" }', "not an ISO 3166-1 alpha-2 country code"),
    ('{ DE = "eu-germany" }', "is not one of"),
])
def test_a_bad_rulesets_mapping_is_refused(tmp_path, mapping, problem):
    text = f'[[org]]\nid = "maple"\nrulesets = {mapping}\n'
    with pytest.raises(ConfigError, match=problem):
        config.parse(text, None, tmp_path)


def test_a_rulesets_key_that_is_no_country_code_stops_start_up_naming_it(tmp_path):
    text = '[[org]]\nid = "maple"\nrulesets = { default = "uk-pecr", UK = "uk-pecr-2026" }\n'
    with pytest.raises(ConfigError) as caught:
        config.parse(text, None, tmp_path)
    assert "org[0].rulesets" in str(caught.value) and "'UK'" in str(caught.value)
    assert "GB for the UK" in str(caught.value)


def test_gateway_run_names_each_org_that_chooses_its_rule_set_per_recipient(tmp_path):
    from gwprocess import GatewayProcess

    gw = GatewayProcess(tmp_path, upstream=f"maildir:{tmp_path / 'mail'}")
    gw.config.write_text(gw.config.read_text().replace(
        'name = "Acme Garden Ltd"\n',
        'name = "Acme Garden Ltd"\nrulesets = { default = "uk-pecr", DE = "eu-de" }\n', 1))
    gw.start()
    try:
        banner = gw.log_text()
    finally:
        assert gw.terminate() == 0
    assert "enforce mode, rule set uk-pecr" in banner
    assert "org acme: rule set per recipient: default -> uk-pecr, DE -> eu-de" in banner
    assert "org owls:" not in banner  # it maps none: [gateway] ruleset for everyone
