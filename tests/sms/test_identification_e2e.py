"""Texts under a rule set that asks the sender to identify itself (ca-casl, us, au-spam)
start with the org's `brand` unless they already name it, and carry the STOP text; the
segment count includes both additions (docs/rulesets.md)."""

from __future__ import annotations

import pytest
from smstest import PERSON

STOP = "Reply STOP to opt out"
TORONTO = "+14165550100"
RULESETS = ('rulesets = { default = "uk-pecr", CA = "ca-casl", US = "us" }\n'
            'postal_address = "1 Garden Way, Leeds LS1 1AA"\n'
            'contact = "hello@acme.test"\nbrand = "Acme"\n')


@pytest.fixture
async def gw(start_gateway):
    gateway = await start_gateway(acme_extra=RULESETS)
    gateway.seed_consent(TORONTO)
    gateway.seed_consent(PERSON)
    return gateway


async def test_a_canadian_text_starts_with_the_brand_and_ends_with_the_stop_text(gw, provider):
    status, answer = await gw.send_json({"to": TORONTO, "body": "Spring sale"})

    assert status == 202, answer
    assert answer["body"] == f"Acme: Spring sale\n{STOP}"
    [sent] = provider.requests
    assert sent["form"]["Body"] == f"Acme: Spring sale\n{STOP}"
    [decision] = gw.rt.ledger.decisions_for(TORONTO)
    assert (decision["ruleset"], decision["region"], decision["region_source"]) == (
        "ca-casl", "CA", "number")


async def test_the_api_answer_names_the_rule_set_the_region_and_where_it_came_from(
        gw, provider):
    status, answer = await gw.send_json({"to": TORONTO, "body": "Spring sale"})
    assert status == 202, answer
    decision = answer["decision"]
    assert (decision["outcome"], decision["ruleset"], decision["region"],
            decision["region_source"]) == ("allowed", "ca-casl", "CA", "number")


async def test_a_text_that_names_the_brand_is_not_prefixed_again(gw, provider):
    status, answer = await gw.send_json({"to": TORONTO, "body": "ACME spring sale"})
    assert status == 202, answer
    assert answer["body"] == f"ACME spring sale\n{STOP}"


async def test_a_uk_text_gets_no_brand(gw, provider):
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert status == 202, answer
    assert answer["body"] == f"Spring sale\n{STOP}"


async def test_a_service_text_gets_no_brand(gw, provider):
    status, answer = await gw.send_json({"to": TORONTO, "body": "Your order shipped",
                                         "purpose": "service"})
    assert status == 202, answer
    assert answer["body"] == "Your order shipped"


async def test_the_segment_count_includes_the_brand_and_the_stop_text(gw, provider):
    # 135 characters and the STOP text fit one segment (157); the brand makes it 163: two.
    status, answer = await gw.send_json({"to": TORONTO, "body": "a" * 135})
    assert status == 202, answer
    assert answer["body"] == "Acme: " + "a" * 135 + f"\n{STOP}"
    assert answer["segments"] == 2
    [warning] = answer["warnings"]
    assert "added a segment" in warning
