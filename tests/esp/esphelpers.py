"""What the ESP and ARF tests share: a gateway with every ESP configured (on the ledger
backend under test), requests signed the way each provider signs them, and a marketing
copy really delivered through the gateway to take tokens from."""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import re
import secrets
import time

import aiohttp
import aiosmtplib
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from gwtest import SOFT_OPT_IN, make_settings, seed

from gateway import server

ADMIN_TOKEN = "test-admin-token"
MAILGUN_KEY = "mg-signing-key-for-tests"
POSTMARK_USER, POSTMARK_PASSWORD = "pm-hooks", "pm-long-random-password"
JANE = "jane@example.com"
# The key pair SendGrid would hold: made here, its public half configured as SendGrid
# shows it (base64 of the DER SubjectPublicKeyInfo).
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())


def public_key_text(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def esp_toml(org: str = "acme") -> str:
    return f"""
[esp.sendgrid]
public_key = "{public_key_text(SENDGRID_KEY)}"
org = "{org}"
[esp.mailgun]
signing_key = "{MAILGUN_KEY}"
org = "{org}"
[esp.postmark]
username = "{POSTMARK_USER}"
password = "{POSTMARK_PASSWORD}"
org = "{org}"
[feedback]
report_addresses = ["FBL@acme.test"]
"""


@contextlib.asynccontextmanager
async def running(tmp_path, sink, ledger_url: str = "", org: str = "acme"):
    settings = make_settings(tmp_path, upstream=f"smtp://127.0.0.1:{sink.port}?tls=none",
                             ledger_url=ledger_url, extra=esp_toml(org))
    async with await server.start(settings) as gw:
        seed(gw.runtime, address=JANE, **SOFT_OPT_IN)
        yield gw


def base_url(gw) -> str:
    return gw.runtime.settings.http.public_url


# -- signing as each provider does ----------------------------------------------------------


def sendgrid_headers(body: bytes, key: ec.EllipticCurvePrivateKey = SENDGRID_KEY,
                     timestamp: int | None = None) -> dict:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": ts}


def sendgrid_event(kind: str, *, token: str | None = None, email_address: str = JANE,
                   event_id: str | None = None) -> dict:
    event = {"email": email_address, "timestamp": int(time.time()), "event": kind,
             "sg_event_id": event_id or secrets.token_urlsafe(16),
             "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"}
    if token:
        event["gateway_token"] = token  # X-SMTPAPI unique_args come back as fields
    return event


def mailgun_body(kind: str, *, token: str | None = None, key: str = MAILGUN_KEY,
                 timestamp: int | None = None, nonce: str | None = None,
                 event_id: str | None = None) -> dict:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(25)
    signature = hmac.new(key.encode(), (ts + nonce).encode(), hashlib.sha256).hexdigest()
    data = {"event": kind, "id": event_id or secrets.token_urlsafe(16),
            "timestamp": time.time(), "recipient": JANE,
            "user-variables": {"gateway_token": token} if token else {},
            "message": {"headers": {"message-id": "spring-1@acme.test"}}}
    return {"signature": {"timestamp": ts, "token": nonce, "signature": signature},
            "event-data": data}


def postmark_auth(user: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def post(gw, path: str, body: bytes | dict | list, headers: dict | None = None
               ) -> tuple[int, dict | str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    async with aiohttp.ClientSession() as http, \
            http.post(base_url(gw) + path, data=data, headers=headers) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def status_json(gw) -> dict:
    async with aiohttp.ClientSession() as http, http.get(
            base_url(gw) + "/status.json",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        assert resp.status == 200
        return await resp.json()


async def status_html(gw) -> str:
    async with aiohttp.ClientSession() as http, http.get(
            base_url(gw) + "/status",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        assert resp.status == 200
        return await resp.text()


# -- mail through the gateway -------------------------------------------------------------

ORIGINAL = (b"From: Acme News <news@acme.test>\r\nTo: jane@example.com\r\n"
            b"Subject: Spring offers\r\nMessage-ID: <spring-1@acme.test>\r\n\r\n"
            b"Our hedge trimmers are on sale.\r\n")


async def send_marketing(gw) -> None:
    port = gw.runtime.settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.login("acme-news", "news-pass")
        await client.sendmail("news@acme.test", [JANE], ORIGINAL)


async def deliver_marketing(gw, sink) -> email.message.EmailMessage:
    """A marketing copy to Jane, as the upstream received it."""
    before = len(sink.messages)
    await send_marketing(gw)
    messages = await sink.wait_for(before + 1)
    return email.message_from_bytes(messages[-1][2], policy=email.policy.default)


def token_of(copy) -> str:
    return re.search(r"/u/([a-z2-7]{32})", str(copy["List-Unsubscribe"])).group(1)


async def assert_next_mail_is_blocked(gw) -> None:
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await send_marketing(gw)
    assert refused.value.code == 550 and "opted_out" in refused.value.message


def opt_outs(gw) -> list[dict]:
    return gw.runtime.ledger.opt_out_rows(JANE)


def events(gw) -> list[dict]:
    return gw.runtime.ledger._rows("SELECT * FROM optout_events ORDER BY id")
