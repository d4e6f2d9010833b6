"""Which rule set decides a recipient (docs/rulesets.md): the region from the newest
evidence naming one, else the number's country (+1: US or CA by area code), else the org's
default_region; the most specific key wins (country, then EU, then default)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.policy import Evidence
from gateway.policy.regions import RulesetChoice, choose, region_of_number, ruleset_for

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MAPPING = {"default": "uk-pecr-2026", "EU": "eu-eprivacy", "DE": "eu-de", "FR": "eu-fr",
           "US": "us", "CA": "ca-casl", "AU": "au-spam"}


def ev(id: str, days: float, region: str | None) -> Evidence:
    return Evidence(id=id, org="acme", channel="sms", address="+14165550100",
                    basis="consent", obtained_at=NOW - timedelta(days=days), region=region)


def pick(address: str = "pat@example.org", channel: str = "email", evidence=(),
         mapping=MAPPING, default_region: str = "GB", given: str | None = None):
    return choose(mapping, "uk-pecr", evidence=evidence, channel=channel, address=address,
                  default_region=default_region, now=NOW, given=given)


def test_the_newest_evidence_naming_a_region_beats_the_number():
    evidence = [ev("old", 100, "FR"), ev("new", 10, "DE"), ev("newest", 1, None)]
    assert pick("+14165550100", "sms", evidence) == RulesetChoice("eu-de", "DE", "evidence")


def test_evidence_dated_after_the_decision_is_not_yet_there():
    evidence = [ev("old", 100, "FR"), ev("future", -1, "DE")]
    assert pick("+14165550100", "sms", evidence).region == "FR"


def test_the_number_beats_the_default_region():
    assert pick("+14165550100", "sms") == RulesetChoice("ca-casl", "CA", "number")
    assert pick("+12125550100", "sms") == RulesetChoice("us", "US", "number")
    assert pick("+61412345678", "sms") == RulesetChoice("au-spam", "AU", "number")


def test_a_plus_one_number_is_canadian_or_american_by_area_code():
    assert region_of_number("+16045550100") == "CA"  # Vancouver
    assert region_of_number("+15145550100") == "CA"  # Montreal
    assert region_of_number("+13055550100") == "US"  # Miami
    assert region_of_number("not a number") is None


def test_an_email_domain_is_never_used_the_default_region_is():
    assert pick("pat@example.de") == RulesetChoice("uk-pecr-2026", "GB", "default")
    assert pick("pat@example.de", default_region="DE") == RulesetChoice(
        "eu-de", "DE", "default")


def test_a_country_beats_eu_which_beats_default():
    assert ruleset_for(MAPPING, "DE") == "eu-de"
    assert ruleset_for(MAPPING, "AT") == "eu-eprivacy"
    assert ruleset_for(MAPPING, "NO") == "eu-eprivacy"  # EEA
    assert ruleset_for(MAPPING, "CH") == "uk-pecr-2026"
    assert ruleset_for({"EU": "eu-eprivacy"}, "JP") is None


def test_an_unknown_region_falls_to_default_or_the_gateway_rule_set():
    assert pick(evidence=[ev("x", 1, "ZZ")], channel="sms").ruleset == "uk-pecr-2026"
    choice = pick(evidence=[ev("x", 1, "ZZ")], channel="sms", mapping={"US": "us"})
    assert choice == RulesetChoice("uk-pecr", "ZZ", "evidence")


def test_a_given_region_beats_everything():
    evidence = [ev("new", 10, "DE")]
    assert pick("+14165550100", "sms", evidence, given="au") == RulesetChoice(
        "au-spam", "AU", "given")


def test_an_org_without_rulesets_uses_the_gateway_rule_set_and_records_no_region():
    assert pick("+14165550100", "sms", [ev("x", 1, "DE")], mapping={}) == RulesetChoice(
        "uk-pecr")
