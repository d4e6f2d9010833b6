"""Each ESP's payload read into events: which become opt-outs (and of which method), which
are ignored, where the token and the event's own id come from."""

from __future__ import annotations

import pytest

from gateway.esp.events import BadPayload, mailgun_event, postmark_event, sendgrid_events


def test_sendgrid_opt_outs_and_complaints_are_read_and_the_rest_ignored():
    batch = [{"event": k, "email": "jane@example.com", "sg_event_id": k, "timestamp": 1764648000}
             for k in ("delivered", "open", "unsubscribe", "group_unsubscribe", "spamreport",
                       "bounce", "dropped")]
    found = sendgrid_events(batch)
    assert [(e.event_type, e.method) for e in found] == [
        ("unsubscribe", "esp"), ("group_unsubscribe", "esp"), ("spamreport", "complaint")]
    assert found[0].occurred_at == "2025-12-02T04:00:00.000000+00:00"


def test_a_sendgrid_event_names_its_token_and_one_without_an_id_gets_a_stable_one():
    event = {"event": "spamreport", "email": "jane@example.com", "timestamp": 1,
             "gateway_token": "t" * 32}
    first, second = sendgrid_events([event]), sendgrid_events([dict(event)])
    assert first[0].token == "t" * 32
    assert first[0].event_id == second[0].event_id and first[0].event_id.startswith("sha256:")


@pytest.mark.parametrize("body", [{"event": "spamreport"}, [1], ["spamreport"]])
def test_a_sendgrid_body_that_is_no_batch_of_objects_is_refused(body):
    with pytest.raises(BadPayload):
        sendgrid_events(body)


def test_mailgun_reads_event_data_and_its_user_variables():
    body = {"event-data": {"event": "complained", "id": "mg-1", "recipient": "jane@example.com",
                           "timestamp": 1764648000.5,
                           "user-variables": {"gateway_token": "t" * 32}}}
    event = mailgun_event(body)
    assert (event.method, event.event_id, event.token) == ("complaint", "mg-1", "t" * 32)
    assert mailgun_event({"event-data": {"event": "delivered"}}) is None
    with pytest.raises(BadPayload):
        mailgun_event({"event": "complained"})


def test_postmark_spam_complaints_and_suppressions_count_and_reactivations_do_not():
    complaint = postmark_event({"RecordType": "SpamComplaint", "ID": 7, "Email": "j@x.test",
                                "Metadata": {"gateway_token": "t" * 32}})
    assert (complaint.method, complaint.event_id, complaint.token) == (
        "complaint", "SpamComplaint:7", "t" * 32)
    change = {"RecordType": "SubscriptionChange", "Recipient": "j@x.test", "MessageID": "m",
              "ChangedAt": "2026-12-02T04:00:00Z", "SuppressSending": True}
    assert postmark_event(change).method == "esp"
    assert postmark_event(change).occurred_at == "2026-12-02T04:00:00.000000+00:00"
    assert postmark_event({**change, "SuppressSending": False}) is None
    assert postmark_event({"RecordType": "Delivery"}) is None
