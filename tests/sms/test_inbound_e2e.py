"""Texts people send to our numbers (contract: "Inbound webhooks"): signed Twilio and Vonage
webhooks, opt-out keywords, START, HELP, and forwarding of other replies to the app."""

from __future__ import annotations

import asyncio

import pytest
from smstest import (
    ACME_NUMBER,
    BLOOM_NUMBER,
    INBOUND_TWILIO,
    PERSON,
    TWILIO_TOKEN,
    twilio_form,
    vonage_sign,
)
from twilio.request_validator import RequestValidator

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


@pytest.fixture
async def gw(start_gateway):
    return await start_gateway()


def vonage_form(text: str, to: str = ACME_NUMBER) -> dict[str, str]:
    return {"msisdn": PERSON.removeprefix("+"), "to": to.removeprefix("+"),
            "messageId": "0A0000001", "text": text, "type": "text",
            "message-timestamp": "2026-03-02 10:00:00"}


# -- signatures --------------------------------------------------------------------------


async def test_a_signed_stop_records_an_opt_out_and_answers_one_confirmation(gw):
    status, body = await gw.post_twilio(twilio_form("STOP"))
    assert status == 200
    assert body.count("<Message>") == 1
    assert "Acme Garden Ltd: you are unsubscribed" in body
    [row] = gw.opt_outs()
    assert (row["org"], row["channel"], row["kind"], row["method"]) == (
        "acme", "sms", "optout", "sms-keyword")
    assert row["address"] == PERSON and row["message_id"] == "SMin0001"
    assert row["source"] == f"SMS keyword STOP to {ACME_NUMBER}"


async def test_a_wrong_signature_is_403_and_records_nothing(gw):
    status, _ = await gw.post_twilio(twilio_form("STOP"), signature="bm90IGl0")
    assert status == 403
    assert gw.opt_outs() == []


async def test_a_missing_signature_is_403_and_records_nothing(gw):
    status, _ = await gw.post_twilio(twilio_form("STOP"), signature=None)
    assert status == 403
    assert gw.opt_outs() == []


async def test_a_signature_over_another_url_is_403(gw):
    status, _ = await gw.post_twilio(twilio_form("STOP"),
                                  signed_url="https://evil.example/sms/inbound/twilio")
    assert status == 403


async def test_a_signature_over_altered_fields_is_403(gw):
    form = twilio_form("hello")
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(
        gw.settings.http.public_url + INBOUND_TWILIO, form)
    status, _ = await gw.post_twilio({**form, "Body": "STOP"}, signature=signature)
    assert status == 403
    assert gw.opt_outs() == []


@pytest.mark.parametrize(("public_url", "signed_base"), [
    ("https://gw.example.test", "https://gw.example.test"),
    ("https://gw.example.test", "https://gw.example.test:443"),
    ("https://gw.example.test:8443", "https://gw.example.test:8443"),
    ("https://gw.example.test:443", "https://gw.example.test"),
])
async def test_signatures_are_checked_against_public_url_with_or_without_port(
        start_gateway, public_url, signed_base):
    gw = await start_gateway(public_url=public_url)
    status, _ = await gw.post_twilio(twilio_form("STOP"), signed_url=signed_base + INBOUND_TWILIO)
    assert status == 200
    assert len(gw.opt_outs()) == 1


# -- keywords ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["STOP", "stop", "  Stop  ", "UNSUBSCRIBE", "cancel", "End",
                                  "quit", "OPTOUT", "revoke", "opt out", "Stop."])
async def test_every_opt_out_keyword_records_an_opt_out_for_the_number_owner(gw, body):
    status, reply = await gw.post_twilio(twilio_form(body))
    assert status == 200 and "<Message>" in reply
    [row] = gw.opt_outs()
    assert (row["org"], row["kind"]) == ("acme", "optout")


@pytest.mark.parametrize("body", ["STOPALL", "stopall", " Stop All "])
async def test_stopall_records_an_opt_out_for_all_orgs(gw, body):
    status, reply = await gw.post_twilio(twilio_form(body))
    assert status == 200
    assert "all marketing texts" in reply
    [row] = gw.opt_outs()
    assert row["org"] == "*"


async def test_stop_to_an_unknown_number_opts_out_of_all_orgs(gw):
    status, reply = await gw.post_twilio(twilio_form("STOP", to="+447400123999"))
    assert status == 200 and "<Message>" in reply
    [row] = gw.opt_outs()
    assert row["org"] == "*"


async def test_stop_to_another_orgs_number_opts_out_of_that_org_only(gw):
    await gw.post_twilio(twilio_form("STOP", to=BLOOM_NUMBER))
    [row] = gw.opt_outs()
    assert row["org"] == "bloom"
    gw.seed_consent()
    status, _ = await gw.send_json({"to": PERSON, "body": "Acme sale"})
    assert status == 202


@pytest.mark.parametrize("body", ["START", "unstop", " Start "])
async def test_start_records_an_opt_in_and_no_consent_evidence(gw, body):
    status, reply = await gw.post_twilio(twilio_form(body))
    assert status == 200
    assert "Acme Garden Ltd: your STOP is lifted" in reply
    [row] = gw.opt_outs()
    assert (row["org"], row["kind"], row["method"]) == ("acme", "optin", "sms-keyword")
    assert row["source"] == f"SMS keyword START to {ACME_NUMBER}"
    assert gw.rt.ledger.evidence_for(PERSON, "sms", "acme") == ()


@pytest.mark.parametrize("body", ["HELP", "help", " info "])
async def test_help_answers_the_help_text_and_records_nothing(gw, body):
    status, reply = await gw.post_twilio(twilio_form(body))
    assert status == 200
    assert "Acme Garden Ltd texts. Reply STOP to opt out" in reply
    assert gw.opt_outs() == []


async def test_replies_are_xml_escaped(gw):
    _, reply = await gw.post_twilio(twilio_form("HELP", to=BLOOM_NUMBER))
    assert "<Message>Bloom &amp; Sons texts." in reply


@pytest.mark.parametrize(("opt_out_type", "kind"), [("STOP", "optout"), ("START", "optin")])
async def test_twilio_opt_out_type_is_recorded_without_a_second_confirmation(
        gw, opt_out_type, kind):
    status, reply = await gw.post_twilio(twilio_form("please stop now",
                                                      OptOutType=opt_out_type))
    assert (status, reply) == (200, EMPTY_TWIML)
    [row] = gw.opt_outs()
    assert row["kind"] == kind


async def test_start_lifts_the_stop_but_consent_from_before_the_stop_stays_spent(gw):
    gw.seed_consent()
    assert (await gw.send_json({"to": PERSON, "body": "Sale"}))[0] == 202
    await gw.post_twilio(twilio_form("STOP", sid="SMstop1"))
    status, answer = await gw.send_json({"to": PERSON, "body": "Sale"})
    assert (status, answer["reason"]) == (403, "opted_out")
    await gw.post_twilio(twilio_form("START", sid="SMstart1"))
    status, answer = await gw.send_json({"to": PERSON, "body": "Sale"})
    assert (status, answer["reason"]) == (403, "no_consent")


async def test_stopall_then_start_to_one_org_lifts_it_for_that_org_only(gw):
    await gw.post_twilio(twilio_form("STOPALL", sid="SMstop1"))
    await gw.post_twilio(twilio_form("START", sid="SMstart1"))
    status, answer = await gw.send_json({"to": PERSON, "body": "Sale"})
    assert (status, answer["reason"]) == (403, "no_consent")
    status, answer = await gw.send_json({"to": PERSON, "body": "Sale"}, key="sk_bloom")
    assert (status, answer["reason"]) == (403, "opted_out")


async def test_start_to_an_unknown_number_records_nothing(gw):
    status, reply = await gw.post_twilio(twilio_form("START", to="+447400123999"))
    assert (status, reply) == (200, EMPTY_TWIML)
    assert gw.opt_outs() == []


# -- other replies -----------------------------------------------------------------------


async def test_other_replies_are_forwarded_re_signed_and_answered_with_empty_twiml(
        start_gateway, app_server):
    forward_url = f"{app_server.base}/replies?org=acme"
    gw = await start_gateway(forward_url=forward_url)
    form = twilio_form("Is the sale on Sunday too?")
    status, reply = await gw.post_twilio(form)
    assert (status, reply) == (200, EMPTY_TWIML)
    [forwarded] = await app_server.wait_for(1)
    assert forwarded["form"] == form
    assert forwarded["headers"]["X-Gateway-Org"] == "acme"
    assert RequestValidator(TWILIO_TOKEN).validate(
        forward_url, forwarded["form"], forwarded["headers"]["X-Twilio-Signature"])
    assert gw.opt_outs() == []


async def test_a_failing_forward_is_retried_three_times_then_noted(start_gateway,
                                                                   app_server):
    app_server.replies = [(500, {})]
    gw = await start_gateway(forward_url=f"{app_server.base}/replies")
    status, _ = await gw.post_twilio(twilio_form("Sunday?"))
    assert status == 200
    await app_server.wait_for(3)
    for _ in range(100):
        if "error" in gw.rt.health.get("sms_forward", {}):
            break
        await asyncio.sleep(0.02)
    assert "3 attempts" in gw.rt.health["sms_forward"]["error"]
    assert len(app_server.requests) == 3


async def test_keywords_are_not_forwarded(start_gateway, app_server):
    gw = await start_gateway(forward_url=f"{app_server.base}/replies")
    await gw.post_twilio(twilio_form("STOP"))
    await gw.post_twilio(twilio_form("HELP"))
    assert app_server.requests == []


# -- Vonage ------------------------------------------------------------------------------


async def test_a_signed_vonage_stop_records_the_opt_out_and_texts_a_confirmation(
        start_gateway, provider):
    gw = await start_gateway(provider="vonage")
    async with gw.http.post(f"{gw.url}/sms/inbound/vonage",
                            data=vonage_sign(vonage_form("Stop"))) as resp:
        assert resp.status == 204
    [row] = gw.opt_outs()
    assert (row["org"], row["address"], row["method"]) == ("acme", PERSON, "sms-keyword")
    [confirmation] = await provider.wait_for(1)
    assert confirmation["path"] == "/sms/json"
    assert confirmation["form"]["to"] == PERSON.removeprefix("+")
    assert confirmation["form"]["from"] == ACME_NUMBER.removeprefix("+")
    assert "you are unsubscribed" in confirmation["form"]["text"]


async def test_a_signed_vonage_json_webhook_works_too(start_gateway):
    gw = await start_gateway(provider="vonage")
    async with gw.http.post(f"{gw.url}/sms/inbound/vonage",
                            json=vonage_sign(vonage_form("STOPALL"))) as resp:
        assert resp.status == 204
    [row] = gw.opt_outs()
    assert row["org"] == "*"


@pytest.mark.parametrize("params", [
    vonage_sign(vonage_form("STOP"), secret="wrong-secret"),
    {**vonage_sign(vonage_form("hello")), "text": "STOP"},
    vonage_form("STOP"),
])
async def test_a_vonage_webhook_with_a_wrong_or_missing_signature_is_403(start_gateway,
                                                                         params):
    gw = await start_gateway(provider="vonage")
    async with gw.http.post(f"{gw.url}/sms/inbound/vonage", data=params) as resp:
        assert resp.status == 403
    assert gw.opt_outs() == []


async def test_a_vonage_reply_that_is_no_keyword_is_forwarded(start_gateway, app_server):
    gw = await start_gateway(provider="vonage", forward_url=f"{app_server.base}/replies")
    params = vonage_sign(vonage_form("What time do you open?"))
    async with gw.http.post(f"{gw.url}/sms/inbound/vonage", data=params) as resp:
        assert resp.status == 204
    [forwarded] = await app_server.wait_for(1)
    assert forwarded["form"] == params
