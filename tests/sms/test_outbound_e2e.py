"""Sending texts through the running gateway (contract: "Text messages (HTTP)"): the JSON
API and the Twilio-compatible API, driven by Twilio's own Python SDK, against a fake
provider on loopback."""

from __future__ import annotations

import asyncio
import base64

import pytest
from smstest import ACME_NUMBER, PERSON, TWILIO_SID, TWILIO_TOKEN, vonage_sign
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

STOP = "Reply STOP to opt out"


def twilio_client(gateway, account: str = "acme-news", token: str = "sk_news") -> Client:
    """Twilio's SDK, pointed at the gateway: only the API base URL changes."""
    client = Client(account, token)
    client.api.base_url = gateway.url
    return client


async def sdk_send(client: Client, **kwargs):
    return await asyncio.to_thread(client.messages.create, **kwargs)


@pytest.fixture
async def gw(start_gateway):
    return await start_gateway()


# -- Twilio's SDK ------------------------------------------------------------------------


async def test_twilio_sdk_sends_an_allowed_text_with_stop_text_appended(gw, provider):
    gw.seed_consent()
    message = await sdk_send(twilio_client(gw), to=PERSON, from_=ACME_NUMBER,
                             body="Spring sale on hedge trimmers")
    [sent] = provider.requests
    assert sent["path"] == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    assert sent["form"]["Body"] == f"Spring sale on hedge trimmers\n{STOP}"
    assert (sent["form"]["To"], sent["form"]["From"]) == (PERSON, ACME_NUMBER)
    credentials = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    assert sent["headers"]["Authorization"] == f"Basic {credentials}"
    assert message.body == f"Spring sale on hedge trimmers\n{STOP}"
    assert message.account_sid == "acme-news"
    assert message.sid.startswith("SM") and message.status == "queued"
    assert message.num_segments == "1" and message.direction == "outbound-api"
    assert message.date_created is not None


async def test_twilio_sdk_gets_error_21610_for_a_blocked_text(gw, provider):
    with pytest.raises(TwilioRestException) as caught:
        await sdk_send(twilio_client(gw), to=PERSON, body="Spring sale")
    assert caught.value.code == 21610
    assert caught.value.status == 400
    assert "no_consent" in caught.value.msg
    assert provider.requests == []


async def test_a_blocked_text_is_recorded_as_a_decision(gw):
    with pytest.raises(TwilioRestException):
        await sdk_send(twilio_client(gw), to=PERSON, body="Spring sale")
    [decision] = gw.rt.ledger.decisions_for(PERSON)
    assert (decision["channel"], decision["outcome"], decision["reason"]) == (
        "sms", "blocked", "no_consent")


async def test_twilio_sdk_with_a_wrong_token_gets_20003(gw, provider):
    with pytest.raises(TwilioRestException) as caught:
        await sdk_send(twilio_client(gw, token="sk_wrong"), to=PERSON, body="Hi")
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert provider.requests == []


async def test_twilio_sdk_cannot_use_another_streams_account(gw):
    with pytest.raises(TwilioRestException) as caught:
        await sdk_send(twilio_client(gw, account="acme-news", token="sk_service"),
                       to=PERSON, body="Hi")
    assert caught.value.code == 20003


async def test_twilio_sdk_gets_21211_for_a_bad_number(gw):
    with pytest.raises(TwilioRestException) as caught:
        await sdk_send(twilio_client(gw), to="+447700900123", body="Hi")
    assert (caught.value.status, caught.value.code) == (400, 21211)


async def test_twilio_sdk_gets_21212_for_a_sender_number_not_in_sms_from(gw, provider):
    gw.seed_consent()
    with pytest.raises(TwilioRestException) as caught:
        await sdk_send(twilio_client(gw), to=PERSON, from_="+447400123999", body="Hi")
    assert (caught.value.status, caught.value.code) == (422, 21212)
    assert provider.requests == []


async def test_twilio_sdk_messaging_service_sid_falls_back_to_the_streams_number(gw, provider):
    gw.seed_consent()
    await sdk_send(twilio_client(gw), to=PERSON, messaging_service_sid="MG123",
                   body="Hello")
    assert provider.requests[0]["form"]["From"] == ACME_NUMBER


async def test_a_provider_error_code_is_passed_back_to_the_twilio_sdk(gw, provider):
    gw.seed_consent()
    provider.replies = [(400, {"code": 21408, "message": "Permission to send an SMS has "
                               "not been enabled for the region", "status": 400})]
    with pytest.raises(TwilioRestException) as caught:
        await sdk_send(twilio_client(gw), to=PERSON, body="Hi")
    assert (caught.value.status, caught.value.code) == (400, 21408)


# -- the JSON API ------------------------------------------------------------------------


async def test_json_api_answers_202_with_decision_final_body_and_provider_id(gw, provider):
    gw.seed_consent()
    status, answer = await gw.send_json({"to": "07400 123456", "body": "Spring sale"})
    assert status == 202
    assert answer["status"] == "accepted"
    assert answer["decision"] == {"allowed": True, "reason": "consent", "outcome": "allowed",
                                  "explanation": answer["decision"]["explanation"],
                                  "ruleset": "uk-pecr", "region": "", "region_source": ""}
    assert (answer["to"], answer["from"]) == (PERSON, ACME_NUMBER)
    assert answer["body"] == f"Spring sale\n{STOP}"
    assert (answer["encoding"], answer["segments"], answer["warnings"]) == ("GSM-7", 1, [])
    assert answer["provider"] == "twilio"
    assert answer["message_id"].startswith("SM")
    [decision] = gw.rt.ledger.decisions_for(PERSON)
    assert decision["message_id"] == answer["gateway_message_id"]


async def test_json_api_blocked_text_is_403_with_reason_and_explanation(gw, provider):
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert status == 403
    assert (answer["error"], answer["reason"]) == ("blocked", "no_consent")
    assert answer["explanation"]
    assert provider.requests == []


async def test_stop_text_is_not_doubled_when_the_body_already_has_it(gw, provider):
    gw.seed_consent()
    body = "Spring sale. Reply STOP to opt out"
    status, answer = await gw.send_json({"to": PERSON, "body": body})
    assert status == 202
    assert answer["body"] == body
    assert provider.requests[0]["form"]["Body"] == body


async def test_a_service_text_goes_unchanged_without_consent(gw, provider):
    status, answer = await gw.send_json({"to": PERSON, "body": "Your parcel is out today"},
                                        key="sk_service")
    assert status == 202
    assert answer["decision"]["reason"] == "service_message"
    assert provider.requests[0]["form"]["Body"] == "Your parcel is out today"


@pytest.mark.parametrize(("body", "encoding", "segments"), [
    ("a" * 160, "GSM-7", 1),
    ("a" * 161, "GSM-7", 2),
    ("ü" * 70, "GSM-7", 1),
    ("ж" * 70, "UCS-2", 1),
    ("ж" * 71, "UCS-2", 2),
])
async def test_segments_are_reported_at_the_boundaries(gw, body, encoding, segments):
    status, answer = await gw.send_json({"to": PERSON, "body": body, "purpose": "service"})
    assert status == 202
    assert (answer["encoding"], answer["segments"]) == (encoding, segments)


async def test_a_warning_says_when_the_stop_text_added_a_segment(gw):
    gw.seed_consent()
    status, answer = await gw.send_json({"to": PERSON, "body": "a" * 150})
    assert status == 202
    assert answer["segments"] == 2
    [warning] = answer["warnings"]
    assert "added a segment" in warning


async def test_twilio_sdk_reports_the_final_segment_count(gw):
    gw.seed_consent()
    message = await sdk_send(twilio_client(gw), to=PERSON, body="ж" * 60)
    assert message.num_segments == "2"


async def test_an_alphanumeric_sender_gets_an_opt_out_link_instead(gw, provider):
    gw.seed_consent()
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale",
                                         "from": "ACME"})
    assert status == 202
    first, link_line = answer["body"].split("\n")
    assert first == "Spring sale" and STOP not in answer["body"]
    prefix = f"Opt out: {gw.settings.http.public_url}/s/"
    assert link_line.startswith(prefix)
    record = gw.rt.tokens.resolve(link_line.removeprefix(prefix))
    assert (record.org, record.channel, record.address) == ("acme", "sms", PERSON)
    assert record.message_id == answer["gateway_message_id"]
    assert provider.requests[0]["form"]["From"] == "ACME"


async def test_a_bad_number_is_400_invalid_number(gw):
    status, answer = await gw.send_json({"to": "12345", "body": "Hi"})
    assert (status, answer["error"], answer["field"]) == (400, "invalid_number", "to")


async def test_bad_json_is_400(gw):
    async with gw.http.post(f"{gw.url}/api/v1/sms", data=b"{not json",
                            headers={"Authorization": "Bearer sk_news",
                                     "Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "bad_json"


async def test_a_missing_body_is_400(gw):
    status, answer = await gw.send_json({"to": PERSON})
    assert (status, answer["field"]) == (400, "body")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk_wrong"},
                                     {"Authorization": "Bearer "},
                                     {"Authorization": "Basic c2tfbmV3czo="}])
async def test_a_wrong_or_missing_api_key_is_401(gw, provider, headers):
    async with gw.http.post(f"{gw.url}/api/v1/sms", json={"to": PERSON, "body": "Hi"},
                            headers=headers) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"] == "unauthorized"
    assert provider.requests == []


# -- provider trouble --------------------------------------------------------------------


async def test_a_provider_answering_500_is_retried_then_a_clear_502(gw, provider):
    gw.seed_consent()
    provider.replies = [(500, {"message": "internal error"})]
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert status == 502
    assert (answer["error"], answer["provider"]) == ("provider_error", "twilio")
    assert "HTTP 500" in answer["message"]
    assert len(provider.requests) == 4  # the first try and three retries
    assert "error" in gw.rt.health["sms_provider"]
    assert "last_ok" not in gw.rt.health["sms_provider"]


async def test_a_provider_that_recovers_during_retries_sends_once(gw, provider):
    gw.seed_consent()
    provider.replies = [(503, {}), (201, {"sid": "SMrecovered", "status": "queued"})]
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert (status, answer["message_id"]) == (202, "SMrecovered")


async def test_provider_21610_records_an_opt_out_and_answers_blocked(gw, provider):
    gw.seed_consent()
    provider.replies = [(400, {"code": 21610, "message": "Attempt to send to unsubscribed "
                               "recipient", "status": 400})]
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert (status, answer["error"], answer["reason"]) == (403, "blocked", "opted_out")
    [row] = gw.opt_outs()
    assert (row["org"], row["channel"], row["method"]) == ("acme", "sms", "provider")
    assert "21610" in row["source"]
    provider.replies = []
    status, answer = await gw.send_json({"to": PERSON, "body": "Another sale"})
    assert (status, answer["reason"]) == (403, "opted_out")
    assert len(provider.requests) == 1


async def test_provider_21610_reaches_the_twilio_sdk_as_21610(gw, provider):
    gw.seed_consent()
    provider.replies = [(400, {"code": 21610, "message": "unsubscribed", "status": 400})]
    with pytest.raises(TwilioRestException) as caught:
        await sdk_send(twilio_client(gw), to=PERSON, body="Spring sale")
    assert caught.value.code == 21610


# -- other providers and modes -----------------------------------------------------------


async def test_texts_go_through_vonage_when_configured(start_gateway, provider):
    gw = await start_gateway(provider="vonage")
    gw.seed_consent()
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert (status, answer["provider"], answer["message_id"]) == (202, "vonage",
                                                                  "0A00000012345678")
    [sent] = provider.requests
    assert sent["path"] == "/sms/json"
    assert sent["form"]["text"] == f"Spring sale\n{STOP}"
    assert sent["form"]["to"] == PERSON.removeprefix("+")


async def test_the_outbox_provider_writes_the_final_text(start_gateway, tmp_path):
    gw = await start_gateway(provider="outbox")
    gw.seed_consent()
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert status == 202
    outbox = gw.settings.sms.outbox.read_text("utf-8")
    assert answer["message_id"] in outbox and "Reply STOP to opt out" in outbox


async def test_monitor_mode_delivers_a_blocked_text_with_a_warning(start_gateway, provider):
    gw = await start_gateway(mode="monitor")
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert status == 202
    assert answer["decision"]["allowed"] is False
    assert answer["body"].endswith(STOP)
    assert any("monitor mode" in w for w in answer["warnings"])


# -- delivery status callbacks -----------------------------------------------------------


async def test_status_callbacks_reach_the_app_re_signed_with_its_api_key(gw, provider,
                                                                         app_server):
    gw.seed_consent()
    app_url = f"{app_server.base}/twilio/status?x=1"
    await sdk_send(twilio_client(gw), to=PERSON, body="Spring sale", status_callback=app_url)
    ours = provider.requests[0]["form"]["StatusCallback"]
    assert ours.startswith(f"{gw.settings.http.public_url}/sms/status/")
    assert app_server.base not in ours
    form = {"MessageSid": "SM1", "MessageStatus": "delivered", "AccountSid": TWILIO_SID,
            "To": PERSON, "From": ACME_NUMBER}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(ours, form)
    async with gw.http.post(ours.replace(gw.settings.http.public_url, gw.url), data=form,
                            headers={"X-Twilio-Signature": signature}) as resp:
        assert resp.status == 204
    [forwarded] = await app_server.wait_for(1)
    assert forwarded["form"]["MessageStatus"] == "delivered"
    assert forwarded["form"]["AccountSid"] == "acme-news"
    assert RequestValidator("sk_news").validate(
        app_url, forwarded["form"], forwarded["headers"]["X-Twilio-Signature"])


async def test_an_unsigned_status_callback_is_refused(gw, provider, app_server):
    gw.seed_consent()
    await gw.send_json({"to": PERSON, "body": "Hi",
                        "status_callback": f"{app_server.base}/status"})
    ours = provider.requests[0]["form"]["StatusCallback"]
    async with gw.http.post(ours.replace(gw.settings.http.public_url, gw.url),
                            data={"MessageStatus": "delivered"}) as resp:
        assert resp.status == 403
    async with gw.http.post(f"{gw.url}/sms/status/forged.id", data={}) as resp:
        assert resp.status == 404
    assert app_server.requests == []


async def test_vonage_delivery_receipts_reach_the_app_as_twilio_statuses(start_gateway,
                                                                         provider, app_server):
    gw = await start_gateway(provider="vonage")
    gw.seed_consent()
    app_url = f"{app_server.base}/status"
    await gw.send_json({"to": PERSON, "body": "Hi", "status_callback": app_url})
    ours = provider.requests[0]["form"]["callback"]
    receipt = vonage_sign({"msisdn": PERSON.removeprefix("+"),
                           "to": ACME_NUMBER.removeprefix("+"), "messageId": "0A00000012345678",
                           "status": "delivered", "err-code": "0"})
    async with gw.http.get(ours.replace(gw.settings.http.public_url, gw.url),
                           params=receipt) as resp:
        assert resp.status == 204
    [forwarded] = await app_server.wait_for(1)
    assert forwarded["form"]["MessageSid"] == "0A00000012345678"
    assert forwarded["form"]["MessageStatus"] == "delivered"
    assert (forwarded["form"]["To"], forwarded["form"]["From"]) == (PERSON, ACME_NUMBER)
    assert RequestValidator("sk_news").validate(
        app_url, forwarded["form"], forwarded["headers"]["X-Twilio-Signature"])


async def test_an_alphanumeric_sender_gets_the_link_even_when_the_body_says_reply_stop(gw):
    gw.seed_consent()
    status, answer = await gw.send_json({"to": PERSON, "body": "Sale. Reply STOP to opt out",
                                         "from": "ACME"})
    assert status == 202
    assert answer["body"].split("\n")[1].startswith("Opt out: ")


async def test_media_messages_are_refused_on_the_twilio_path(gw, provider):
    gw.seed_consent()
    with pytest.raises(TwilioRestException) as caught:
        await sdk_send(twilio_client(gw), to=PERSON, body="Look",
                       media_url=["https://acme.example/a.png"])
    assert caught.value.code == 21620
    assert provider.requests == []
