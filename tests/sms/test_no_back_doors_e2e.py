"""No back doors for texts (contract: "Added in 0.3" -> "No back doors"; issue 12, findings
3, 4, 5 and the webhook part of 8), each tried against the running gateway over real
sockets: START is no consent, a stream cannot reclassify its texts without
`allow_headers`, a text's `from` must be one of its stream's `sms_from`, only a working
opt-out spares the gateway's own, and webhook bodies that cannot be read are refused
with 400, never 500."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest
from smstest import ACME_NUMBER, PERSON, TWILIO_TOKEN, twilio_form
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from gateway.errors import StoreUnavailable
from gateway.sms.callbacks import sign_callback

STOP = "Reply STOP to opt out"
OTHER_PERSON = "+447400123457"


@pytest.fixture
async def gw(start_gateway):
    return await start_gateway()


def twilio_client(gateway, account: str = "acme-news", token: str = "sk_news") -> Client:
    client = Client(account, token)
    client.api.base_url = gateway.url
    return client


async def sdk_send(gateway, **kwargs):
    return await asyncio.to_thread(twilio_client(gateway).messages.create, **kwargs)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


# -- finding 3: START lifts a STOP; it is not consent -----------------------------------------


async def test_stop_then_start_without_evidence_leaves_marketing_blocked_as_no_consent(gw,
                                                                                      provider):
    assert (await gw.post_twilio(twilio_form("STOP", sid="SMstop1")))[0] == 200
    assert (await gw.post_twilio(twilio_form("START", sid="SMstart1")))[0] == 200
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert (status, answer["error"], answer["reason"]) == (403, "blocked", "no_consent")
    with pytest.raises(TwilioRestException) as caught:
        await sdk_send(gw, to=PERSON, body="Spring sale")
    assert (caught.value.status, caught.value.code) == (400, 21610)
    assert "no_consent" in caught.value.msg
    assert provider.requests == []


async def test_a_soft_opt_in_from_before_a_stop_stays_spent_after_start(gw):
    gw.seed_soft_opt_in()
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert (status, answer["decision"]["reason"]) == (202, "soft_opt_in")
    await gw.post_twilio(twilio_form("STOP", sid="SMstop1"))
    await gw.post_twilio(twilio_form("START", sid="SMstart1"))
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert (status, answer["reason"]) == (403, "no_consent")


async def test_after_start_a_new_purchase_is_a_soft_opt_in_again(gw):
    await gw.post_twilio(twilio_form("STOP", sid="SMstop1"))
    gw.seed_soft_opt_in(obtained_at=now())
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert (status, answer["reason"]) == (403, "opted_out")  # a purchase lifts no STOP
    await gw.post_twilio(twilio_form("START", sid="SMstart1"))
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert (status, answer["decision"]["reason"]) == (202, "soft_opt_in")


# -- finding 4: classification overrides only where allow_headers = true ----------------------


@pytest.mark.parametrize(("field", "value"), [
    ("purpose", "service"), ("nature", "campaigning"), ("category", "lawnmowers"),
])
async def test_an_override_on_a_stream_without_allow_headers_is_422_and_nothing_happens(
        gw, provider, field, value):
    await gw.post_twilio(twilio_form("STOP"))
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale", field: value},
                                        key="sk_strict")
    assert (status, answer["error"], answer["field"]) == (422, "override_not_allowed", field)
    assert "allow_headers" in answer["detail"]
    assert provider.requests == []
    assert gw.rt.ledger.decisions_for(PERSON) == []


async def test_the_streams_own_values_are_accepted_on_a_stream_without_allow_headers(gw):
    gw.seed_consent()
    status, answer = await gw.send_json(
        {"to": PERSON, "body": "Spring sale", "purpose": "Marketing", "nature": "commercial",
         "category": "garden-tools"}, key="sk_strict")
    assert (status, answer["decision"]["reason"]) == (202, "consent")


async def test_purpose_service_is_honoured_on_a_stream_with_allow_headers(gw, provider):
    status, answer = await gw.send_json({"to": PERSON, "body": "Your parcel is out today",
                                         "purpose": "service"})
    assert (status, answer["decision"]["reason"]) == (202, "service_message")
    assert provider.requests[0]["form"]["Body"] == "Your parcel is out today"


# -- finding 5a: a text's sender is one of its stream's sms_from ------------------------------


async def test_an_unlisted_sender_id_is_422_on_the_json_api_and_nothing_is_sent(gw, provider):
    gw.seed_consent()
    status, answer = await gw.send_json({"to": PERSON, "body": "Your tax refund",
                                         "from": "HMRC"})
    assert (status, answer["error"], answer["field"]) == (422, "from_not_allowed", "from")
    assert provider.requests == []
    assert gw.rt.ledger.decisions_for(PERSON) == []


async def test_an_unlisted_sender_id_is_21212_on_the_twilio_path_and_nothing_is_sent(
        gw, provider):
    gw.seed_consent()
    with pytest.raises(TwilioRestException) as caught:
        await sdk_send(gw, to=PERSON, from_="HMRC", body="Your tax refund")
    assert (caught.value.status, caught.value.code) == (422, 21212)
    assert "'From'" in caught.value.msg
    assert provider.requests == []


@pytest.mark.parametrize("sender", ["+447400123999", "acme", "ACME GARDEN LIMITED", "60777"])
async def test_any_sender_not_listed_as_written_is_refused(gw, provider, sender):
    gw.seed_consent()
    status, answer = await gw.send_json({"to": PERSON, "body": "Hi", "from": sender})
    assert (status, answer["error"]) == (422, "from_not_allowed")
    assert provider.requests == []


async def test_a_listed_number_given_in_national_form_is_sent_from_its_e164_form(gw, provider):
    gw.seed_consent()
    status, answer = await gw.send_json({"to": PERSON, "body": "Hi", "from": "07400 123000"})
    assert (status, answer["from"]) == (202, ACME_NUMBER)
    assert provider.requests[0]["form"]["From"] == ACME_NUMBER


async def test_a_listed_sender_id_works_on_the_twilio_path_with_the_opt_out_link(gw, provider):
    gw.seed_consent()
    message = await sdk_send(gw, to=PERSON, from_="ACME", body="Spring sale")
    assert message.from_ == "ACME"
    first, link = message.body.split("\n")
    assert first == "Spring sale"
    assert link.startswith(f"Opt out: {gw.settings.http.public_url}/s/")
    assert provider.requests[0]["form"]["From"] == "ACME"


# -- finding 5b: only a working opt-out spares the gateway's own ------------------------------


async def test_a_fake_unsubscribe_url_from_a_number_still_gets_stop_text(gw, provider):
    gw.seed_consent()
    body = "Spring sale. unsubscribe: https://nowhere.invalid"
    status, answer = await gw.send_json({"to": PERSON, "body": body})
    assert (status, answer["body"]) == (202, f"{body}\n{STOP}")
    assert provider.requests[0]["form"]["Body"] == f"{body}\n{STOP}"


async def test_a_reply_stop_instruction_from_a_number_gets_no_extra_line(gw):
    gw.seed_consent()
    body = "Spring sale. Text STOP to 60777"
    status, answer = await gw.send_json({"to": PERSON, "body": body})
    assert (status, answer["body"]) == (202, body)


async def test_a_fake_unsubscribe_url_from_a_sender_id_gets_the_gateways_link(gw):
    gw.seed_consent()
    body = "Spring sale. Unsubscribe: https://nowhere.invalid"
    status, answer = await gw.send_json({"to": PERSON, "body": body, "from": "ACME"})
    assert status == 202
    kept, link = answer["body"].rsplit("\n", 1)
    assert kept == body
    prefix = f"Opt out: {gw.settings.http.public_url}/s/"
    assert link.startswith(prefix)
    assert gw.rt.tokens.resolve(link.removeprefix(prefix)).address == PERSON


async def link_of_a_text_to(gw, person: str) -> str:
    status, answer = await gw.send_json({"to": person, "body": "First", "from": "ACME"})
    assert status == 202
    return answer["body"].split("\n")[1].removeprefix("Opt out: ")


async def test_the_gateways_own_link_for_this_person_counts_as_the_opt_out(gw):
    gw.seed_consent()
    body = f"Spring sale. Opt out: {await link_of_a_text_to(gw, PERSON)}"
    for sender in ("ACME", ACME_NUMBER):
        status, answer = await gw.send_json({"to": PERSON, "body": body, "from": sender})
        assert (status, answer["body"]) == (202, body)


async def test_the_gateways_link_for_another_person_does_not_count(gw):
    gw.seed_consent()
    gw.seed_consent(OTHER_PERSON)
    body = f"Spring sale. Opt out: {await link_of_a_text_to(gw, OTHER_PERSON)}"
    status, answer = await gw.send_json({"to": PERSON, "body": body, "from": "ACME"})
    assert status == 202
    assert answer["body"].startswith(body + "\n") and answer["body"].count("/s/") == 2


async def test_a_forged_gateway_link_does_not_count(gw):
    gw.seed_consent()
    forged = f"{gw.settings.http.public_url}/s/{'a' * 32}"
    status, answer = await gw.send_json({"to": PERSON, "body": f"Sale. Opt out: {forged}",
                                         "from": "ACME"})
    assert status == 202 and answer["body"].count("/s/") == 2


# -- finding 8: webhooks refuse what they cannot read; no exception text in answers -----------


UNREADABLE = {
    "deeply-nested-json": ("application/json", b"[" * 100_000 + b"]" * 100_000),
    "nested-object": ("application/json", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    "5000-digit-number": ("application/json", b'{"msisdn": ' + b"4" * 5000 + b"}"),
    "invalid-json": ("application/json", b'{"msisdn": "447400123456",'),
    "json-in-latin-1": ("application/json", '{"text": "caf\xe9"}'.encode("latin-1")),
    "form-not-utf-8": ("application/x-www-form-urlencoded", b"Body=caf\xe9&From=%2B44"),
    "form-unknown-charset": ("application/x-www-form-urlencoded; charset=x-nonsense",
                             b"Body=STOP"),
    "multipart-without-boundary": ("multipart/form-data", b"--x\r\n\r\nSTOP\r\n--x--\r\n"),
}


def webhook_paths(gw) -> list[str]:
    callback = sign_callback(gw.settings.unsubscribe.secrets[0], "acme-news",
                             "http://127.0.0.1:9/status")
    return ["/sms/inbound/twilio", "/sms/inbound/vonage", f"/sms/status/{callback}"]


@pytest.mark.parametrize("kind", UNREADABLE)
async def test_an_unreadable_webhook_body_is_refused_with_400_and_records_nothing(gw, kind):
    content_type, data = UNREADABLE[kind]
    for path in webhook_paths(gw):
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(
            gw.settings.http.public_url + path, {})
        async with gw.http.post(gw.url + path, data=data, headers={
                "Content-Type": content_type, "X-Twilio-Signature": signature}) as resp:
            text = await resp.text()
            assert resp.status == 400, (path, resp.status, text)
        assert "Error" not in text and "digits" not in text and len(text) < 200, text
    assert gw.opt_outs() == []


async def store_down(*_args, **_kwargs):
    raise StoreUnavailable("ledger write failed: disk I/O error at /srv/secret/ledger.db")


async def test_a_store_failure_answers_503_without_the_exception_text(gw, monkeypatch):
    gw.seed_consent()
    monkeypatch.setattr(gw.rt.consent, "adecide", store_down)
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert (status, answer["error"]) == (503, "store_unavailable")
    assert "try again" in answer["detail"] and "/srv/secret" not in str(answer)
    with pytest.raises(TwilioRestException) as caught:
        await sdk_send(gw, to=PERSON, body="Spring sale")
    assert (caught.value.status, caught.value.code) == (503, 20503)
    assert "try again" in caught.value.msg and "/srv/secret" not in caught.value.msg


async def crash(*_args, **_kwargs):
    raise RuntimeError("internal detail: sqlite3 cursor at 0xdeadbeef")


async def test_an_unexpected_error_while_deciding_answers_503_not_500(gw, monkeypatch):
    monkeypatch.setattr(gw.rt.consent, "adecide", crash)
    status, answer = await gw.send_json({"to": PERSON, "body": "Spring sale"})
    assert (status, answer["error"]) == (503, "internal_error")
    assert not re.search("0xdeadbeef|RuntimeError|sqlite3", str(answer))
    with pytest.raises(TwilioRestException) as caught:
        await sdk_send(gw, to=PERSON, body="Spring sale")
    assert (caught.value.status, caught.value.code) == (503, 20503)
    assert "0xdeadbeef" not in caught.value.msg
