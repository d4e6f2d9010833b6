"""How each ESP proves a webhook is its own. Verification only; no crypto of our own:
ECDSA through the `cryptography` package (OpenSSL), HMAC through the standard library.

- SendGrid: ECDSA P-256 with SHA-256 over the timestamp header's text followed by the raw
  body; the signature header holds the base64 of the DER signature; the key is the
  base64 DER SubjectPublicKeyInfo SendGrid shows (its own library wraps that in PEM
  armour and verifies the same bytes).
- Mailgun: HMAC-SHA256, keyed with the webhook signing key, of the timestamp followed by
  the token, as lower-case hex, compared in constant time.
- Postmark: HTTP basic auth, both halves compared in constant time.

A timestamp further than MAX_SKEW_SECONDS from now (either way) is refused: a captured
request can be replayed only that long (and Mailgun's token only once, see hooks.py)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

MAX_SKEW_SECONDS = 300


def load_sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """The Event Webhook verification key as SendGrid shows it (base64 DER), or as PEM.
    ValueError naming what is wrong otherwise."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            key = serialization.load_der_public_key(
                base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm, UnicodeEncodeError):
        raise ValueError("not a public key: paste the Event Webhook's verification key as "
                         "SendGrid shows it (base64)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("not an ECDSA P-256 public key (SendGrid signs with P-256)")
    return key


def fresh(timestamp: str | None, now: float | None = None) -> bool:
    """`timestamp` (epoch seconds, as text) is within MAX_SKEW_SECONDS of now."""
    if not timestamp or not timestamp.strip().isdigit() or len(timestamp.strip()) > 12:
        return False
    now = time.time() if now is None else now
    return abs(now - int(timestamp.strip())) <= MAX_SKEW_SECONDS


def verify_sendgrid(key: ec.EllipticCurvePublicKey, body: bytes, signature: str | None,
                    timestamp: str | None) -> bool:
    """SendGrid's signature of `timestamp` + `body` (the raw body, as received)."""
    if not signature or not timestamp:
        return False
    try:
        der = base64.b64decode(signature.strip(), validate=True)
        key.verify(der, timestamp.encode("utf-8", "surrogateescape") + body,
                   ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def mailgun_signature(signing_key: str, timestamp: str, token: str) -> str:
    return hmac.new(signing_key.encode(), (timestamp + token).encode("utf-8", "surrogateescape"),
                    hashlib.sha256).hexdigest()


def verify_mailgun(signing_key: str, timestamp: str, token: str, signature: str) -> bool:
    expected = mailgun_signature(signing_key, timestamp, token)
    return hmac.compare_digest(expected.encode(),
                               signature.strip().lower().encode("utf-8", "surrogateescape"))


def same_credentials(given: tuple[str, str] | None, username: str, password: str) -> bool:
    """Basic-auth credentials match, both halves compared in full (no early exit)."""
    if given is None:
        return False
    user_ok = hmac.compare_digest(given[0].encode("utf-8", "surrogateescape"), username.encode())
    password_ok = hmac.compare_digest(given[1].encode("utf-8", "surrogateescape"),
                                      password.encode())
    return user_ok & password_ok
