"""Each provider's webhook as its own documentation shows it (the sample payloads, every
field kept, only the recipient and the times made ours), signed the way it signs: the
gateway reads them as the providers send them, not only the fields our other tests post."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from esphelpers import (
    JANE,
    assert_next_mail_is_blocked,
    deliver_marketing,
    events,
    mailgun_body,
    opt_outs,
    post,
    postmark_auth,
    running,
    sendgrid_headers,
    token_of,
)


@pytest.fixture
async def gw(tmp_path, sink, ledger_url):
    async with running(tmp_path, sink, ledger_url) as gateway:
        yield gateway


def sendgrid_sample(token: str) -> list[dict]:
    now = int(time.time())
    common = {"email": JANE, "timestamp": now, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
              "category": ["cat facts"], "gateway_token": token,
              "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"}
    return [
        {**common, "event": "processed", "sg_event_id": "rbtnWrG1DVDGGGFHFyun0A=="},
        {**common, "event": "delivered", "response": "250 OK", "sg_event_id": "rWVYmVk90MjZJ9iohOBa3w=="},
        {**common, "event": "spamreport", "sg_event_id": "37nvH5QBz858KGVYCM4uOA=="},
        {**common, "event": "unsubscribe", "sg_event_id": "zz_BjPgU_5pS-J8vlfB1sg=="},
        {**common, "event": "group_unsubscribe", "asm_group_id": 10,
         "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322)",
         "ip": "255.255.255.255", "url": "http://www.sendgrid.com/",
         "sg_event_id": "ahSCB7xYcXFb-hEaawsPRw=="},
    ]


async def test_sendgrids_documented_batch_records_its_three_opt_out_events_once_each(gw, sink):
    batch = sendgrid_sample(token_of(await deliver_marketing(gw, sink)))
    body = json.dumps(batch, indent=2).encode()  # SendGrid signs the bytes it sends

    status, answer = await post(gw, "/hooks/sendgrid", body, sendgrid_headers(body))
    again, repeat = await post(gw, "/hooks/sendgrid", body, sendgrid_headers(body))

    assert status == 200 and answer["recorded"] == 3
    assert again == 200 and repeat["duplicate"] == 3 and repeat["recorded"] == 0
    assert sorted(r["method"] for r in opt_outs(gw)) == ["complaint", "esp", "esp"]
    assert sorted(e["event_type"] for e in events(gw)) == [
        "group_unsubscribe", "spamreport", "unsubscribe"]
    await assert_next_mail_is_blocked(gw)


async def test_mailguns_documented_complained_webhook_records_a_complaint(gw, sink):
    token = token_of(await deliver_marketing(gw, sink))
    body = mailgun_body("complained")
    body["event-data"] = {
        "event": "complained", "id": "-Agny091SquKnsrW2NEKUA", "timestamp": time.time(),
        "log-level": "warn", "envelope": {"sending-ip": "173.193.210.33"},
        "flags": {"is-test-mode": False},
        "message": {"headers": {"to": f"Alice <{JANE}>",
                                "message-id": "20110215055645.25246.63817@acme.test",
                                "from": "Bob <bob@acme.test>",
                                "subject": "Test complained webhook"},
                    "attachments": [], "size": 111},
        "recipient": JANE, "campaigns": [], "tags": ["my_tag_1", "my_tag_2"],
        "user-variables": {"my_var_1": "Mailgun Variable #1", "gateway_token": token}}

    status, answer = await post(gw, "/hooks/mailgun", body)

    assert status == 200 and answer["recorded"] == 1
    assert [(r["method"], r["org"]) for r in opt_outs(gw)] == [("complaint", "acme")]
    assert events(gw)[0]["event_id"] == "-Agny091SquKnsrW2NEKUA"


async def test_postmarks_documented_spam_complaint_and_subscription_change_record_opt_outs(
        gw, sink):
    token = token_of(await deliver_marketing(gw, sink))
    complaint = {
        "RecordType": "SpamComplaint", "MessageStream": "outbound", "ID": 42,
        "Type": "SpamComplaint", "TypeCode": 512, "Name": "Spam complaint", "Tag": "Test",
        "MessageID": "00000000-0000-0000-0000-000000000000",
        "Metadata": {"a_key": "a_value", "gateway_token": token}, "ServerID": 1234,
        "Description": "", "Details": "Test spam complaint details", "Email": JANE,
        "From": "sender@acme.test", "BouncedAt": "2026-11-05T16:33:54.9070259Z",
        "DumpAvailable": True, "Inactive": True, "CanActivate": False,
        "Subject": "Test subject", "Content": "<Abuse report dump>"}
    change = {
        "RecordType": "SubscriptionChange", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 123456, "MessageStream": "outbound",
        "ChangedAt": "2026-11-05T16:34:34.416071Z", "Recipient": JANE, "Origin": "Recipient",
        "SuppressSending": True, "SuppressionReason": "ManualSuppression", "Tag": "my-tag",
        "Metadata": {"example": "value", "gateway_token": token}}

    first = await post(gw, "/hooks/postmark", complaint, postmark_auth())
    second = await post(gw, "/hooks/postmark", change, postmark_auth())

    assert first[0] == second[0] == 200
    assert first[1]["recorded"] == 1
    assert sorted(r["method"] for r in opt_outs(gw)) == ["complaint"] + (
        ["esp"] if second[1]["recorded"] else [])
    assert [e["event_type"] for e in events(gw)] == ["SpamComplaint", "SubscriptionChange"]
    await assert_next_mail_is_blocked(gw)
