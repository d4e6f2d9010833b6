"""The ESP webhooks against a running gateway, on both ledger backends: each provider's
request built and signed the way it signs (an ECDSA key pair made here for SendGrid, HMAC
for Mailgun, basic auth for Postmark). An opt-out recorded blocks the next mail; anything
refused records nothing."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path

import aiosmtplib
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).parent))
from esphelpers import (
    ADMIN_TOKEN,
    JANE,
    assert_next_mail_is_blocked,
    deliver_marketing,
    events,
    mailgun_body,
    opt_outs,
    post,
    postmark_auth,
    running,
    send_marketing,
    sendgrid_event,
    sendgrid_headers,
    status_html,
    status_json,
    token_of,
)
from gwtest import traces_in_ledger


@pytest.fixture
async def gw(tmp_path, sink, ledger_url):
    async with running(tmp_path, sink, ledger_url) as gateway:
        yield gateway


async def post_sendgrid(gw, batch, **sign) -> tuple[int, dict | str]:
    body = json.dumps(batch).encode()
    return await post(gw, "/hooks/sendgrid", body, sendgrid_headers(body, **sign))


# -- SendGrid ---------------------------------------------------------------------------


async def test_the_copy_carries_each_esps_custom_data_with_its_token(gw, sink):
    copy = await deliver_marketing(gw, sink)
    token = token_of(copy)
    assert json.loads(str(copy["X-SMTPAPI"])) == {"unique_args": {"gateway_token": token}}
    assert json.loads(str(copy["X-Mailgun-Variables"])) == {"gateway_token": token}
    assert str(copy["X-PM-Metadata-gateway_token"]) == token


async def test_a_signed_sendgrid_spamreport_records_a_complaint_and_the_next_mail_is_blocked(
        gw, sink):
    copy = await deliver_marketing(gw, sink)
    event = sendgrid_event("spamreport", token=token_of(copy))

    status, answer = await post_sendgrid(gw, [sendgrid_event("delivered"), event])

    assert status == 200 and answer["recorded"] == 1
    [row] = opt_outs(gw)
    assert (row["method"], row["org"], row["channel"]) == ("complaint", "acme", "email")
    assert row["message_id"] == "<spring-1@acme.test>"
    [kept] = events(gw)
    assert (kept["provider"], kept["event_id"], kept["event_type"], kept["optout_id"],
            kept["stream"]) == ("sendgrid", event["sg_event_id"], "spamreport", row["id"],
                                "acme-news")
    await assert_next_mail_is_blocked(gw)


@pytest.mark.parametrize("kind", ["unsubscribe", "group_unsubscribe"])
async def test_a_sendgrid_unsubscribe_without_a_token_is_matched_by_recipient_and_esp_org(
        gw, kind):
    status, answer = await post_sendgrid(gw, [sendgrid_event(kind)])

    assert status == 200 and answer["recorded"] == 1
    assert [(r["method"], r["org"], r["address"]) for r in opt_outs(gw)] == [
        ("esp", "acme", JANE)]
    await assert_next_mail_is_blocked(gw)


async def test_sendgrid_events_that_are_no_opt_out_are_ignored(gw):
    batch = [sendgrid_event(k) for k in ("processed", "delivered", "open", "click", "bounce")]
    status, answer = await post_sendgrid(gw, batch)

    assert status == 200 and answer == {"ok": True, "recorded": 0, "duplicate": 0,
                                        "unresolved": 0, "erased": 0}
    assert opt_outs(gw) == [] and events(gw) == []


async def test_the_same_sendgrid_event_twice_records_one_opt_out(gw):
    event = sendgrid_event("spamreport")
    await post_sendgrid(gw, [event, event])
    status, answer = await post_sendgrid(gw, [event])

    assert status == 200 and answer["duplicate"] == 1
    assert len(opt_outs(gw)) == 1 and len(events(gw)) == 1


async def test_a_sendgrid_batch_signed_with_another_key_is_refused_and_records_nothing(gw):
    other = ec.generate_private_key(ec.SECP256R1())
    status, _ = await post_sendgrid(gw, [sendgrid_event("spamreport")], key=other)

    assert status == 403
    assert opt_outs(gw) == [] and events(gw) == []


async def test_a_sendgrid_body_changed_after_signing_is_refused(gw):
    body = json.dumps([sendgrid_event("spamreport")]).encode()
    headers = sendgrid_headers(body)
    status, _ = await post(gw, "/hooks/sendgrid", body.replace(b"jane", b"joan"), headers)

    assert status == 403 and opt_outs(gw) == []


async def test_a_sendgrid_request_without_a_signature_is_refused(gw):
    status, _ = await post(gw, "/hooks/sendgrid", [sendgrid_event("spamreport")])

    assert status == 403 and opt_outs(gw) == []


@pytest.mark.parametrize("age", [3600, -3600], ids=["an hour old", "an hour ahead"])
async def test_a_stale_sendgrid_timestamp_is_refused_even_when_signed(gw, age):
    status, _ = await post_sendgrid(gw, [sendgrid_event("spamreport")],
                                    timestamp=int(time.time()) - age)

    assert status == 403 and opt_outs(gw) == [] and events(gw) == []


@pytest.mark.parametrize("body", [b"[{\"event\": ", b"{\"event\": \"spamreport\"}", b"[1, 2]"],
                         ids=["malformed", "an object, not a batch", "not event objects"])
async def test_a_signed_sendgrid_body_that_is_not_an_event_batch_answers_400(gw, body):
    status, answer = await post(gw, "/hooks/sendgrid", body, sendgrid_headers(body))

    assert status == 400 and answer["error"] in ("bad_json", "bad_payload")
    assert opt_outs(gw) == []


async def test_a_sendgrid_body_over_the_limit_answers_413_and_records_nothing(gw):
    body = json.dumps([sendgrid_event("spamreport", event_id=f"e{n}") for n in range(8000)]
                      ).encode()
    assert len(body) > 1024 * 1024
    status, _ = await post(gw, "/hooks/sendgrid", body, sendgrid_headers(body))

    assert status == 413 and opt_outs(gw) == [] and events(gw) == []


# -- Mailgun -----------------------------------------------------------------------------


async def test_a_signed_mailgun_complaint_records_a_complaint_and_blocks_the_next_mail(gw, sink):
    copy = await deliver_marketing(gw, sink)
    status, answer = await post(gw, "/hooks/mailgun",
                                mailgun_body("complained", token=token_of(copy)))

    assert status == 200 and answer["recorded"] == 1
    assert [(r["method"], r["org"]) for r in opt_outs(gw)] == [("complaint", "acme")]
    await assert_next_mail_is_blocked(gw)


async def test_a_mailgun_unsubscribe_records_an_esp_opt_out(gw):
    status, _ = await post(gw, "/hooks/mailgun", mailgun_body("unsubscribed"))

    assert status == 200 and [r["method"] for r in opt_outs(gw)] == ["esp"]


@pytest.mark.parametrize("forge", ["wrong key", "stale timestamp", "no signature"])
async def test_a_mailgun_request_not_signed_now_with_the_key_is_refused(gw, forge):
    if forge == "wrong key":
        body = mailgun_body("complained", key="not-the-key")
    elif forge == "stale timestamp":
        body = mailgun_body("complained", timestamp=int(time.time()) - 3600)
    else:
        body = mailgun_body("complained")
        del body["signature"]
    status, _ = await post(gw, "/hooks/mailgun", body)

    assert status == 403 and opt_outs(gw) == [] and events(gw) == []


async def test_a_replayed_mailgun_token_is_refused_even_for_another_event(gw):
    first = mailgun_body("unsubscribed")
    replay = mailgun_body("complained", nonce=first["signature"]["token"],
                          timestamp=int(first["signature"]["timestamp"]))
    assert (await post(gw, "/hooks/mailgun", first))[0] == 200

    status, _ = await post(gw, "/hooks/mailgun", replay)

    assert status == 403
    assert [r["method"] for r in opt_outs(gw)] == ["esp"] and len(events(gw)) == 1


async def test_malformed_mailgun_json_answers_400(gw):
    status, answer = await post(gw, "/hooks/mailgun", b'{"signature": ')

    assert status == 400 and answer["error"] == "bad_json" and opt_outs(gw) == []


# -- Postmark ----------------------------------------------------------------------------


async def test_a_postmark_spam_complaint_with_basic_auth_records_a_complaint(gw, sink):
    copy = await deliver_marketing(gw, sink)
    body = {"RecordType": "SpamComplaint", "ID": 4321, "Type": "SpamComplaint",
            "Email": JANE, "BouncedAt": "2026-12-02T04:00:00Z", "MessageStream": "outbound",
            "Metadata": {"gateway_token": token_of(copy)}}
    status, answer = await post(gw, "/hooks/postmark", body, postmark_auth())

    assert status == 200 and answer["recorded"] == 1
    assert [r["method"] for r in opt_outs(gw)] == ["complaint"]
    assert events(gw)[0]["event_id"] == "SpamComplaint:4321"
    await assert_next_mail_is_blocked(gw)


async def test_a_postmark_subscription_change_records_an_esp_opt_out_and_a_reactivation_nothing(
        gw):
    change = {"RecordType": "SubscriptionChange", "MessageID": "abc", "Recipient": JANE,
              "ChangedAt": "2026-12-02T04:00:00Z", "SuppressSending": True,
              "SuppressionReason": "ManualSuppression", "Origin": "Recipient"}
    await post(gw, "/hooks/postmark", change, postmark_auth())
    await post(gw, "/hooks/postmark", {**change, "SuppressSending": False,
                                       "ChangedAt": "2026-12-02T05:00:00Z"}, postmark_auth())

    assert [(r["method"], r["kind"]) for r in opt_outs(gw)] == [("esp", "optout")]


@pytest.mark.parametrize("auth", [{}, postmark_auth(password="guess")],
                         ids=["no credentials", "wrong password"])
async def test_a_postmark_request_without_its_credentials_is_refused(gw, auth):
    body = {"RecordType": "SpamComplaint", "ID": 1, "Email": JANE}
    status, _ = await post(gw, "/hooks/postmark", body, auth)

    assert status == 401 and opt_outs(gw) == [] and events(gw) == []


async def test_malformed_postmark_json_answers_400(gw):
    status, _ = await post(gw, "/hooks/postmark", b"{not json", postmark_auth())

    assert status == 400 and opt_outs(gw) == []


# -- the operator's view -------------------------------------------------------------------


async def test_status_counts_esp_and_complaint_opt_outs_and_the_complaint_rate_per_stream(gw, sink):
    copy = await deliver_marketing(gw, sink)
    await post_sendgrid(gw, [sendgrid_event("spamreport", token=token_of(copy))])
    await post(gw, "/hooks/mailgun", mailgun_body("unsubscribed", event_id="mg-1"))

    data = await status_json(gw)

    by_method = data["opt_outs"]["last_24h"]["by_method"]
    assert (by_method["esp"], by_method["complaint"]) == (1, 1)
    rates = {r["stream"]: r for r in data["outside_opt_outs"]["complaint_rate_24h"]["streams"]}
    assert (rates["acme-news"]["delivered"], rates["acme-news"]["complaints"]) == (1, 1)
    assert rates["acme-news"]["rate"] == 1.0 and rates["acme-news"]["over_line"]
    assert not rates["acme-fixed"]["over_line"] and rates["acme-fixed"]["rate"] is None
    assert data["outside_opt_outs"]["complaint_rate_24h"]["line"] == 0.003
    html = await status_html(gw)
    row = re.search(r'<tr id="complaint-rate-acme-news"[^>]*>(.*?)</tr>', html, re.DOTALL)
    assert "100.000 %" in row.group(1) and "at or over the line" in row.group(1)
    assert re.search(r'id="opt-out-last_24h-complaint"', html)


async def test_a_provider_that_is_not_configured_answers_404(tmp_path, sink):
    from gwtest import SOFT_OPT_IN, make_settings, seed

    from gateway import server

    settings = make_settings(tmp_path, upstream=f"smtp://127.0.0.1:{sink.port}?tls=none")
    async with await server.start(settings) as plain:
        seed(plain.runtime, address=JANE, **SOFT_OPT_IN)
        for path in ("/hooks/sendgrid", "/hooks/mailgun", "/hooks/postmark"):
            assert (await post(plain, path, b"[]"))[0] == 404
        await send_marketing(plain)
        copy = (await sink.wait_for(1))[-1][2]
        assert b"X-SMTPAPI" not in copy and b"X-PM-Metadata" not in copy


async def test_an_event_whose_org_cannot_be_told_is_kept_for_the_operator_and_records_nothing(
        tmp_path, sink, ledger_url):
    async with running(tmp_path, sink, ledger_url, org="") as gw:
        status, answer = await post_sendgrid(gw, [sendgrid_event("spamreport")])

        assert status == 200 and answer["unresolved"] == 1
        assert opt_outs(gw) == []
        [kept] = (await status_json(gw))["outside_opt_outs"]["unresolved"]
        assert kept["provider"] == "sendgrid" and kept["address"] == "j•••@example.com"
        assert "no [esp.sendgrid] org" in kept["problem"]


async def test_two_gateways_on_one_postgresql_ledger_share_the_replay_memory_and_the_events(
        tmp_path, sink, pg_cluster):
    url = pg_cluster.new_database()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running(tmp_path / "a", sink, url) as first, \
            running(tmp_path / "b", sink, url) as second:
        body = mailgun_body("unsubscribed")
        assert (await post(first, "/hooks/mailgun", body))[0] == 200
        assert (await post(second, "/hooks/mailgun", body))[0] == 403

        event = sendgrid_event("spamreport")
        await post_sendgrid(first, [event])
        status, answer = await post_sendgrid(second, [event])

        assert status == 200 and answer["duplicate"] == 1
        assert sorted(r["method"] for r in opt_outs(second)) == ["complaint", "esp"]


# -- an erased person --------------------------------------------------------------------


async def erase_jane(gw) -> dict:
    status, answer = await post(gw, "/api/v1/erasures", {
        "channel": "email", "address": JANE, "org": "acme", "source": "letter, ref 118"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status == 201
    return answer


async def test_an_esp_event_from_before_an_erasure_arriving_after_it_records_no_trace_of_the_person(
        gw, sink, ledger_url):
    copy = await deliver_marketing(gw, sink)
    happened = int(time.time()) - 60  # SendGrid retries a batch for up to 72 hours
    await erase_jane(gw)
    late = {**sendgrid_event("spamreport", token=token_of(copy)), "timestamp": happened}
    unsubscribed = mailgun_body("unsubscribed")
    unsubscribed["event-data"]["timestamp"] = happened

    status, answer = await post_sendgrid(gw, [late])
    mailgun_status, mailgun_answer = await post(gw, "/hooks/mailgun", unsubscribed)

    assert (status, answer["erased"], answer["recorded"]) == (200, 1, 0)
    assert (mailgun_status, mailgun_answer["erased"]) == (200, 1)
    assert opt_outs(gw) == [] and events(gw) == []
    assert traces_in_ledger(gw.runtime.ledger, ledger_url, "jane@") == []
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await send_marketing(gw)
    assert refused.value.code == 550 and "erased" in refused.value.message


async def test_a_complaint_made_after_the_erasure_about_a_copy_sent_before_it_records_nothing(
        gw, sink, ledger_url):
    copy = await deliver_marketing(gw, sink)
    erased = await erase_jane(gw)
    later = datetime.fromisoformat(erased["at"]).timestamp() + 1  # its token went with her
    event = {**sendgrid_event("spamreport", token=token_of(copy)), "timestamp": later}

    status, answer = await post_sendgrid(gw, [event])

    assert (status, answer["erased"], answer["recorded"]) == (200, 1, 0)
    assert opt_outs(gw) == [] and events(gw) == []
    assert traces_in_ledger(gw.runtime.ledger, ledger_url, "jane@") == []


async def test_an_esp_event_after_the_erasure_is_the_persons_new_act_and_is_recorded(gw):
    erased = await erase_jane(gw)
    later = datetime.fromisoformat(erased["at"]).timestamp() + 1
    event = {**sendgrid_event("unsubscribe"), "timestamp": later}

    status, answer = await post_sendgrid(gw, [event])

    assert (status, answer["recorded"], answer["erased"]) == (200, 1, 0)
    assert [r["method"] for r in opt_outs(gw)] == ["esp"]
