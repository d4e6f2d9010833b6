"""Each ESP's signature check on its own: SendGrid's ECDSA (a key pair made here, the
public half given as SendGrid shows it, base64 DER, or as PEM), Mailgun's HMAC, Postmark's
basic auth, and the freshness of a timestamp."""

from __future__ import annotations

import base64
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.esp import signatures

KEY = ec.generate_private_key(ec.SECP256R1())
BODY = b'[{"email":"jane@example.com","event":"spamreport"}]'


def b64_der(public_key) -> str:
    return base64.b64encode(public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def signed(body: bytes = BODY, ts: str = "1764648000", key=KEY) -> str:
    return base64.b64encode(key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


def test_a_sendgrid_signature_over_timestamp_and_body_verifies():
    public = signatures.load_sendgrid_key(b64_der(KEY.public_key()))
    assert signatures.verify_sendgrid(public, BODY, signed(), "1764648000")


def test_a_sendgrid_key_given_as_pem_is_the_same_key():
    pem = KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    public = signatures.load_sendgrid_key(pem.decode())
    assert signatures.verify_sendgrid(public, BODY, signed(), "1764648000")


@pytest.mark.parametrize("change", ["body", "timestamp", "signature", "garbage", "missing"])
def test_any_change_breaks_a_sendgrid_signature(change):
    public = signatures.load_sendgrid_key(b64_der(KEY.public_key()))
    body, ts, sig = BODY, "1764648000", signed()
    if change == "body":
        body = body.replace(b"jane", b"joan")
    elif change == "timestamp":
        ts = "1764648001"
    elif change == "signature":
        sig = signed(body=b"[]")
    elif change == "garbage":
        sig = "not base64!"
    else:
        sig = None
    assert not signatures.verify_sendgrid(public, body, sig, ts)


@pytest.mark.parametrize("text", [
    "", "not base64 at all!", base64.b64encode(b"not DER").decode(),
    b64_der(ec.generate_private_key(ec.SECP384R1()).public_key()),
    b64_der(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()),
], ids=["empty", "not base64", "not DER", "P-384", "RSA"])
def test_anything_but_a_p256_public_key_is_refused_with_a_reason(text):
    with pytest.raises(ValueError, match="key"):
        signatures.load_sendgrid_key(text)


def test_a_timestamp_is_fresh_within_five_minutes_either_way():
    now = time.time()
    assert signatures.fresh(str(int(now) - 299), now)
    assert signatures.fresh(str(int(now) + 299), now)
    assert not signatures.fresh(str(int(now) - 301), now)
    assert not signatures.fresh(str(int(now) + 301), now)
    for bad in (None, "", "12.5", "-1", "soon", "9" * 40):
        assert not signatures.fresh(bad, now)


def test_mailgun_signs_timestamp_and_token_with_hmac_sha256_hex():
    sig = signatures.mailgun_signature("key", "1764648000", "abc")
    assert len(sig) == 64 and signatures.verify_mailgun("key", "1764648000", "abc", sig)
    assert signatures.verify_mailgun("key", "1764648000", "abc", sig.upper())
    assert not signatures.verify_mailgun("other", "1764648000", "abc", sig)
    assert not signatures.verify_mailgun("key", "1764648000", "abd", sig)
    assert not signatures.verify_mailgun("key", "1764648000", "abc", "é" * 64)


def test_postmark_credentials_must_match_in_both_halves():
    assert signatures.same_credentials(("user", "pass"), "user", "pass")
    assert not signatures.same_credentials(("user", "pas"), "user", "pass")
    assert not signatures.same_credentials(("usr", "pass"), "user", "pass")
    assert not signatures.same_credentials(None, "user", "pass")
