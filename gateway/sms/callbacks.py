"""Delivery status callbacks: the provider calls us, we call the app.

When an app asks for status callbacks (``StatusCallback`` / ``status_callback``), the
provider is given our own URL instead: ``{public_url}/sms/status/{id}``. The id carries
the stream and the app's URL, signed with the unsubscribe secret (HMAC-SHA256), so no
table is needed, a callback hours later or after a restart still finds its way, and
nobody can make the gateway post to a URL of their choosing. Key rotation works as for
unsubscribe tokens: the first secret signs, every secret verifies.

The app gets Twilio's status callback form (``MessageSid``, ``MessageStatus``, ``To``,
``From``, ``AccountSid`` = the stream id, ``ErrorCode`` …) whichever provider sent the
text, signed with ``X-Twilio-Signature`` computed with the stream's api_key: the
credential the app already uses as its Twilio auth token towards us.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable

from ..config import Settings
from .forward import Form

_DOMAIN = b"sms-status-callback:"
_MAC_BYTES = 16

# Vonage delivery receipt status -> Twilio MessageStatus
VONAGE_STATUSES = {
    "delivered": "delivered",
    "accepted": "sent",
    "buffered": "sent",
    "expired": "undelivered",
    "failed": "undelivered",
    "rejected": "failed",
    "unknown": "sent",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: str) -> bytes:
    return hmac.new(secret.encode(), _DOMAIN + payload.encode(),
                    hashlib.sha256).digest()[:_MAC_BYTES]


def sign_callback(secret: str, stream_id: str, url: str) -> str:
    """The path segment standing for (stream, the app's callback URL)."""
    payload = _b64(json.dumps([stream_id, url], separators=(",", ":")).encode())
    return f"{payload}.{_b64(_mac(secret, payload))}"


def status_url(settings: Settings, stream_id: str, app_url: str) -> str:
    """Our callback URL for the provider, standing for the app's `app_url`."""
    signed = sign_callback(settings.unsubscribe.secrets[0], stream_id, app_url)
    return f"{settings.http.public_url}/sms/status/{signed}"


def open_callback(signed: str, secrets: Iterable[str]) -> tuple[str, str] | None:
    """(stream id, app URL) of a callback id signed with one of `secrets`; else None."""
    payload, _, mac_text = signed.partition(".")
    try:
        mac = _unb64(mac_text)
        valid = False
        for secret in secrets:
            valid |= hmac.compare_digest(mac, _mac(secret, payload))
        if not valid:
            return None
        stream_id, url = json.loads(_unb64(payload))
    except (binascii.Error, ValueError, TypeError):
        return None
    if not isinstance(stream_id, str) or not isinstance(url, str):
        return None
    return stream_id, url


def twilio_status_form(params: Form, stream_id: str) -> Form:
    """Twilio's own status form, with the app's account sid (the stream id)."""
    replaced = {"AccountSid"}
    return [("AccountSid", stream_id)] + [(k, v) for k, v in params if k not in replaced]


def vonage_status_form(params: dict[str, str], stream_id: str) -> Form:
    """A Vonage delivery receipt, retold as Twilio's status form."""
    status = VONAGE_STATUSES.get(params.get("status", "").lower(), "sent")
    form = [
        ("AccountSid", stream_id),
        ("ApiVersion", "2010-04-01"),
        ("MessageSid", params.get("messageId", "")),
        ("SmsSid", params.get("messageId", "")),
        ("MessageStatus", status),
        ("SmsStatus", status),
        ("To", "+" + params.get("msisdn", "").removeprefix("+")),
        ("From", _vonage_number(params.get("to", ""))),
    ]
    error = params.get("err-code", "0")
    if error not in ("", "0"):
        form.append(("ErrorCode", error))
    return form


def _vonage_number(value: str) -> str:
    return "+" + value if value.isdigit() else value
