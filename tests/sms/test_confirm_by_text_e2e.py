"""The double opt-in by text: a sign-up for texts sends one confirmation text through the
(fake) provider from the org's own number, and the person's signed YES reply confirms it;
a YES with nothing pending is an ordinary reply, forwarded as before."""

from __future__ import annotations

import pytest
from smstest import ACME_NUMBER, BLOOM_NUMBER, PERSON, twilio_form, vonage_sign

from gateway.consent import classify

SIGNUP = {"org": "acme", "channel": "sms", "address": PERSON,
          "source": "shop counter tablet", "wording": "Texts about Acme's garden offers"}


@pytest.fixture
async def gw(start_gateway, app_server):
    return await start_gateway(forward_url=app_server.base + "/inbound")


async def sign_up(gw, **fields) -> tuple[int, dict]:
    async with gw.http.post(f"{gw.url}/api/v1/subscriptions", json={**SIGNUP, **fields},
                            headers={"Authorization": "Bearer test-admin-token"}) as resp:
        return resp.status, await resp.json()


def evidence(gw) -> list[dict]:
    return [e for e in gw.rt.ledger.iter_all("evidence") if e["address"] == PERSON]


def marketing_reason(gw) -> str:
    what = classify(gw.settings.stream("acme-news"))
    return gw.rt.consent.evaluate(what, "sms", PERSON).reason


async def test_a_sign_up_by_text_sends_one_confirmation_text_from_the_orgs_number(gw,
                                                                                 provider):
    status, body = await sign_up(gw)
    assert status == 202 and body["confirmation_sent"] is True
    [sent] = await provider.wait_for(1)
    form = sent["form"]
    assert (form["To"], form["From"]) == (PERSON, ACME_NUMBER)
    assert "reply YES" in form["Body"] and "/c/" in form["Body"]
    assert "Acme Garden Ltd" in form["Body"]
    [decision] = gw.rt.ledger.decisions_for(PERSON)
    assert (decision["reason"], decision["channel"]) == ("service_message", "sms")
    assert marketing_reason(gw) == "no_consent"


async def test_a_signed_yes_reply_confirms_the_pending_sign_up(gw, provider):
    await sign_up(gw)
    await provider.wait_for(1)
    status, twiml = await gw.post_twilio(twilio_form(" Yes! "))
    assert status == 200
    assert "you are subscribed" in twiml
    [consent] = evidence(gw)
    assert consent["basis"] == "consent" and consent["confirmed_at"]
    [row] = gw.rt.ledger.subscriptions_for(PERSON)
    assert row["confirmed_via"] == "sms-yes:twilio" and row["evidence_id"] == str(consent["id"])
    assert marketing_reason(gw) == "consent"


async def test_a_second_yes_confirms_nothing_more_and_is_forwarded(gw, provider, app_server):
    await sign_up(gw)
    await provider.wait_for(1)
    await gw.post_twilio(twilio_form("YES"))
    status, twiml = await gw.post_twilio(twilio_form("YES", sid="SMin0002"))
    assert status == 200 and "<Message>" not in twiml
    assert len(evidence(gw)) == 1
    [forwarded] = await app_server.wait_for(1)
    assert forwarded["form"]["Body"] == "YES"


async def test_a_yes_without_a_pending_sign_up_is_forwarded_and_records_nothing(gw,
                                                                               app_server):
    status, twiml = await gw.post_twilio(twilio_form("yes"))
    assert status == 200 and "<Message>" not in twiml
    [forwarded] = await app_server.wait_for(1)
    assert forwarded["form"]["Body"] == "yes"
    assert evidence(gw) == []


async def test_a_yes_to_another_orgs_number_does_not_confirm(gw, provider, app_server):
    await sign_up(gw)
    await provider.wait_for(1)
    await gw.post_twilio(twilio_form("YES", to=BLOOM_NUMBER))
    assert evidence(gw) == []
    await app_server.wait_for(1)


async def test_an_unsigned_yes_is_refused_and_confirms_nothing(gw, provider):
    await sign_up(gw)
    await provider.wait_for(1)
    status, _ = await gw.post_twilio(twilio_form("YES"), signature=None)
    assert status == 403
    assert evidence(gw) == []


async def test_the_link_in_the_confirmation_text_confirms_too(gw, provider):
    await sign_up(gw)
    [sent] = await provider.wait_for(1)
    link = next(w for w in sent["form"]["Body"].split() if "/c/" in w)
    async with gw.http.post(link) as resp:
        assert resp.status == 200
    assert [e["confirmed_at"] is not None for e in evidence(gw)] == [True]



async def test_when_the_provider_fails_the_sign_up_answers_503_and_a_retry_sends(gw,
                                                                               provider):
    provider.replies = [(500, {"code": 20500, "message": "down", "status": 500})]
    status, body = await sign_up(gw)
    assert (status, body["error"]) == (503, "confirmation_not_sent")
    provider.replies = []
    status, body = await sign_up(gw)
    assert (status, body["confirmation_sent"]) == (202, True)
    assert "reply YES" in provider.requests[-1]["form"]["Body"]


async def test_a_signed_vonage_yes_confirms_too(start_gateway, provider):
    gw = await start_gateway(provider="vonage")
    await sign_up(gw)
    await provider.wait_for(1)
    form = vonage_sign({"msisdn": PERSON.removeprefix("+"), "to": ACME_NUMBER.removeprefix("+"),
                        "messageId": "0A0000009", "text": "yes", "type": "text",
                        "message-timestamp": "2026-03-02 10:00:00"})
    async with gw.http.post(f"{gw.url}/sms/inbound/vonage", data=form) as resp:
        assert resp.status == 204
    [consent] = evidence(gw)
    assert consent["confirmed_at"]
    [_, reply] = await provider.wait_for(2)  # the confirmation, then the one reply
    assert "you are subscribed" in reply["form"]["text"]
