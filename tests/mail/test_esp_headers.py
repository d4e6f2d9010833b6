"""Each configured ESP's custom-data header on a marketing copy: added with the token,
merged into a sender's own, never doubled."""

from __future__ import annotations

import email
import email.policy
import json

from gateway.mail.esp_headers import add_esp_headers

TOKEN = "abcdefghijklmnopqrstuvwxyz234567"
COPY = (b"From: news@acme.test\r\nTo: jane@example.com\r\nSubject: Hi\r\n\r\n"
        b"Body line\r\n")


def parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def test_each_esp_gets_its_header_holding_the_token_and_the_body_is_untouched():
    data = add_esp_headers(COPY, TOKEN, ("sendgrid", "mailgun", "postmark"))
    msg = parsed(data)
    assert json.loads(str(msg["X-SMTPAPI"])) == {"unique_args": {"gateway_token": TOKEN}}
    assert json.loads(str(msg["X-Mailgun-Variables"])) == {"gateway_token": TOKEN}
    assert str(msg["X-PM-Metadata-gateway_token"]) == TOKEN
    assert data.endswith(b"\r\n\r\nBody line\r\n")


def test_no_esp_leaves_the_copy_as_it_is():
    assert add_esp_headers(COPY, TOKEN, ()) == COPY


def test_a_senders_own_x_smtpapi_keeps_what_it_holds_and_gains_the_token():
    own = {"category": ["spring"], "unique_args": {"campaign": "c1"},
           "filters": {"clicktrack": {"settings": {"enable": 0}}}}
    data = add_esp_headers(f"X-SMTPAPI: {json.dumps(own)}\r\n".encode() + COPY, TOKEN,
                           ("sendgrid",))
    msg = parsed(data)
    assert len(msg.get_all("X-SMTPAPI")) == 1
    assert json.loads(str(msg["X-SMTPAPI"])) == {
        **own, "unique_args": {"campaign": "c1", "gateway_token": TOKEN}}
    assert all(len(line) <= 78 for line in data.split(b"\r\n"))


def test_a_senders_header_that_is_no_json_object_is_left_alone():
    data = add_esp_headers(b"X-Mailgun-Variables: not json\r\n" + COPY, TOKEN, ("mailgun",))
    assert parsed(data).get_all("X-Mailgun-Variables") == ["not json"]


def test_a_senders_own_postmark_token_is_replaced():
    data = add_esp_headers(b"X-PM-Metadata-gateway_token: someone-elses\r\n" + COPY, TOKEN,
                           ("postmark",))
    assert parsed(data).get_all("X-PM-Metadata-gateway_token") == [TOKEN]
