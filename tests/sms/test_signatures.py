"""Webhook signatures: ours agree with Twilio's own RequestValidator and with Vonage's scheme."""

import hashlib
import hmac

import pytest
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from gateway.sms.signatures import (
    SignatureError,
    twilio_signature,
    verify_twilio,
    verify_vonage,
    vonage_signature,
)

TOKEN = "12345678901234567890123456789012"
URL = "https://gateway.example.test/sms/inbound/twilio?org=acme"
FORM = {
    "MessageSid": "SM0123456789abcdef0123456789abcdef",
    "From": "+447700900123",
    "To": "+447400123000",
    "Body": "Stop & go = fine",
    "OptOutType": "STOP",
}


def twilio_signs(url, params=FORM, token=TOKEN):
    return RequestValidator(token).compute_signature(url, params)


def test_our_twilio_signature_is_twilios():
    assert twilio_signature(URL, FORM, TOKEN) == twilio_signs(URL)


def test_twilio_signature_verifies():
    assert verify_twilio(URL, FORM, twilio_signs(URL), TOKEN)


def test_twilio_signature_made_with_another_token_fails():
    assert not verify_twilio(URL, FORM, twilio_signs(URL, token="another-token"), TOKEN)


def test_twilio_signature_fails_when_a_parameter_was_changed():
    tampered = {**FORM, "Body": "START"}
    assert not verify_twilio(URL, tampered, twilio_signs(URL), TOKEN)


def test_twilio_signature_fails_when_a_parameter_was_added():
    assert not verify_twilio(URL, {**FORM, "Extra": "1"}, twilio_signs(URL), TOKEN)


def test_twilio_signature_fails_for_another_url():
    other = "https://gateway.example.test/sms/inbound/twilio?org=other"
    assert not verify_twilio(other, FORM, twilio_signs(URL), TOKEN)


@pytest.mark.parametrize("signature", [None, "", "not-a-signature"])
def test_missing_or_garbage_twilio_signature_fails(signature):
    assert not verify_twilio(URL, FORM, signature, TOKEN)


@pytest.mark.parametrize(
    ("signed_url", "request_url"),
    [
        (
            "https://gateway.example.test:443/sms/inbound/twilio",
            "https://gateway.example.test/sms/inbound/twilio",
        ),
        (
            "https://gateway.example.test/sms/inbound/twilio",
            "https://gateway.example.test:443/sms/inbound/twilio",
        ),
        ("http://127.0.0.1:80/sms/inbound/twilio", "http://127.0.0.1/sms/inbound/twilio"),
        ("http://127.0.0.1/sms/inbound/twilio", "http://127.0.0.1:80/sms/inbound/twilio"),
        ("http://127.0.0.1/sms/inbound/twilio", "http://127.0.0.1:8025/sms/inbound/twilio"),
    ],
)
def test_twilio_signature_over_url_with_or_without_port_verifies_like_twilios(
    signed_url, request_url
):
    signature = twilio_signs(signed_url)
    assert RequestValidator(TOKEN).validate(request_url, FORM, signature)
    assert verify_twilio(request_url, FORM, signature, TOKEN)


def test_twilio_signature_over_a_different_explicit_port_fails_like_twilios():
    signature = twilio_signs("https://gateway.example.test:8443/sms/inbound/twilio")
    request_url = "https://gateway.example.test:9443/sms/inbound/twilio"
    assert not RequestValidator(TOKEN).validate(request_url, FORM, signature)
    assert not verify_twilio(request_url, FORM, signature, TOKEN)


def test_repeated_twilio_parameters_sign_like_twilios_multidict_handling():
    pairs = [
        ("MediaUrl", "https://b.example/2"),
        ("MediaUrl", "https://a.example/1"),
        ("To", "+44"),
    ]
    signature = RequestValidator(TOKEN).compute_signature(URL, MultiDict(pairs))
    assert twilio_signature(URL, pairs, TOKEN) == signature
    assert verify_twilio(URL, MultiDict(pairs), signature, TOKEN)


def test_twilio_signature_with_no_parameters():
    assert verify_twilio(URL, {}, twilio_signs(URL, params={}), TOKEN)


def test_empty_twilio_auth_token_is_a_configuration_error():
    with pytest.raises(SignatureError, match="auth token is empty"):
        verify_twilio(URL, FORM, twilio_signs(URL), "")


# Vonage: a published example (the Vonage SDKs' tests) for the legacy "md5hash" method.
VONAGE_EXAMPLE = {"a": "1", "b": "2", "timestamp": "1461605396"}
VONAGE_EXAMPLE_SIG = "6af838ef94998832dbfc29020b564830"
SECRET = "signature-secret"
NOW = 1_700_000_000
INBOUND = {
    "msisdn": "447700900123",
    "to": "447400123000",
    "messageId": "0A0000000123ABCD1",
    "text": "STOP & go = fine",
    "type": "text",
    "keyword": "STOP",
    "message-timestamp": "2023-11-14 22:13:20",
    "timestamp": str(NOW),
    "nonce": "7a4b1c3e-0000-4000-8000-000000000000",
}


def test_vonage_md5hash_matches_the_published_example():
    assert vonage_signature(VONAGE_EXAMPLE, "secret", "md5hash") == VONAGE_EXAMPLE_SIG


def test_vonage_md5hash_example_verifies():
    signed = {**VONAGE_EXAMPLE, "sig": VONAGE_EXAMPLE_SIG}
    assert verify_vonage(signed, "secret", "md5hash", now=1461605396)


def test_vonage_hmac_signs_ampersand_joined_params_with_ampersand_and_equals_replaced():
    data = "".join(
        f"&{k}={v.replace('&', '_').replace('=', '_')}" for k, v in sorted(INBOUND.items())
    )
    expected = hmac.new(SECRET.encode(), data.encode(), hashlib.sha256).hexdigest()
    assert vonage_signature(INBOUND, SECRET, "sha256") == expected


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
def test_vonage_signature_verifies_for_every_method(method):
    signed = {**INBOUND, "sig": vonage_signature(INBOUND, SECRET, method)}
    assert verify_vonage(signed, SECRET, method, now=NOW)


def test_vonage_signature_is_compared_without_regard_to_case():
    signed = {**INBOUND, "sig": vonage_signature(INBOUND, SECRET, "sha256").upper()}
    assert verify_vonage(signed, SECRET, now=NOW)


def test_vonage_signature_ignores_a_sig_among_the_params():
    assert vonage_signature({**INBOUND, "sig": "x"}, SECRET) == vonage_signature(INBOUND, SECRET)


def test_vonage_signature_with_another_secret_fails():
    signed = {**INBOUND, "sig": vonage_signature(INBOUND, "another-secret", "sha256")}
    assert not verify_vonage(signed, SECRET, now=NOW)


def test_vonage_signature_with_another_method_fails():
    signed = {**INBOUND, "sig": vonage_signature(INBOUND, SECRET, "sha1")}
    assert not verify_vonage(signed, SECRET, "sha256", now=NOW)


def test_vonage_signature_fails_when_a_parameter_was_changed():
    signed = {**INBOUND, "sig": vonage_signature(INBOUND, SECRET, "sha256"), "text": "START"}
    assert not verify_vonage(signed, SECRET, now=NOW)


def test_vonage_request_without_sig_fails():
    assert not verify_vonage(INBOUND, SECRET, now=NOW)


def test_vonage_signature_with_stale_timestamp_fails():
    signed = {**INBOUND, "sig": vonage_signature(INBOUND, SECRET, "sha256")}
    assert not verify_vonage(signed, SECRET, now=NOW + 301)
    assert not verify_vonage(signed, SECRET, now=NOW - 301)


def test_vonage_signature_within_the_allowed_skew_verifies():
    signed = {**INBOUND, "sig": vonage_signature(INBOUND, SECRET, "sha256")}
    assert verify_vonage(signed, SECRET, now=NOW + 300)
    assert verify_vonage(signed, SECRET, now=NOW + 900, max_skew_seconds=900)


@pytest.mark.parametrize("timestamp", [None, "", "yesterday"])
def test_vonage_signature_without_a_usable_timestamp_fails(timestamp):
    params = {k: v for k, v in INBOUND.items() if k != "timestamp"}
    if timestamp is not None:
        params["timestamp"] = timestamp
    signed = {**params, "sig": vonage_signature(params, SECRET, "sha256")}
    assert not verify_vonage(signed, SECRET, now=NOW)


def test_unknown_vonage_method_is_a_configuration_error():
    with pytest.raises(SignatureError, match="unknown Vonage signature method 'sha3'"):
        verify_vonage(INBOUND, SECRET, "sha3", now=NOW)


def test_empty_vonage_secret_is_a_configuration_error():
    with pytest.raises(SignatureError, match="signature_secret"):
        vonage_signature(INBOUND, "")
