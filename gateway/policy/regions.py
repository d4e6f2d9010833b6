"""Which rule set decides a recipient (docs/rulesets.md, "Which rule set decides a
recipient"): the person's region, then the org's most specific mapping for it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import phonenumbers

from .model import Evidence

#: Member states of the EU and the EEA: the `EU` key covers them.
EU_EEA = frozenset((
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
    "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO"))
SOURCES = ("evidence", "number", "default", "given")
#: Country codes a region may be: every region of the numbering plans (ISO 3166-1 alpha-2,
#: with Kosovo's XK and the Ascension and Tristan da Cunha codes the plans use), and the
#: assigned codes of places without their own numbering.
COUNTRIES = frozenset(phonenumbers.SUPPORTED_REGIONS) | {
    "AQ", "BV", "GS", "HM", "PN", "TF", "UM"}
#: Codes people write that are no country: a region of neither decides the rule set.
NOT_COUNTRIES = {"UK": "the United Kingdom is GB", "EU": "give the member state, like DE"}


def country_code(value: str) -> str:
    """`value` as an ISO 3166-1 alpha-2 country code (upper case); ValueError naming the
    mistake, so that a typo never silently falls through to the org's default rule set."""
    code = value.strip().upper()
    if code in NOT_COUNTRIES:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code: "
                         f"{NOT_COUNTRIES[code]}")
    if code not in COUNTRIES:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (like DE)")
    return code


@dataclass(frozen=True)
class RulesetChoice:
    """The rule set for one recipient, the region it was chosen by and where that came from
    (`evidence`, `number`, `default`, `given`; "" when the org maps no regions)."""

    ruleset: str
    region: str = ""
    region_source: str = ""


def region_of_number(number: str) -> str | None:
    """The country of a phone number; a +1 number is CA by its area code, else US."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    if parsed.country_code == 1:
        return "CA" if phonenumbers.region_code_for_number(parsed) == "CA" else "US"
    # A number outside the allocated blocks (a test range) still names its country code.
    region = (phonenumbers.region_code_for_number(parsed)
              or phonenumbers.region_code_for_country_code(parsed.country_code))
    return region if region and region not in ("ZZ", "001") else None


def region_from_evidence(evidence: Iterable[Evidence], now: datetime) -> str | None:
    """The `region` of the newest (by obtained_at) record that names one."""
    newest = max((e for e in evidence if e.region and e.obtained_at <= now),
                 key=lambda e: (e.obtained_at, e.id), default=None)
    return newest.region if newest else None


def ruleset_for(mapping: Mapping[str, str], region: str) -> str | None:
    """The most specific key: the country, then `EU`, then `default`."""
    if region in mapping:
        return mapping[region]
    if region in EU_EEA and "EU" in mapping:
        return mapping["EU"]
    return mapping.get("default")


def choose(mapping: Mapping[str, str], fallback: str, *, evidence: Iterable[Evidence],
           channel: str, address: str, default_region: str, now: datetime,
           given: str | None = None) -> RulesetChoice:
    """The rule set for one recipient. `mapping` is the org's `rulesets` (empty: `fallback`,
    the `[gateway] ruleset`, for everyone as before); `evidence` the person's records for
    this org and channel; `given` a region set by `gateway check --region`."""
    if not mapping:
        return RulesetChoice(fallback)
    if given:
        region, source = given.upper(), "given"
    elif found := region_from_evidence(evidence, now):
        region, source = found, "evidence"
    elif channel == "sms" and (found := region_of_number(address)):
        region, source = found, "number"
    else:
        region, source = default_region, "default"
    return RulesetChoice(ruleset_for(mapping, region) or fallback, region, source)
