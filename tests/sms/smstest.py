"""Fixtures for the SMS end-to-end tests: the whole gateway on free loopback ports, a fake
provider speaking Twilio's Messages API and Vonage's SMS API, and a fake app that receives
forwarded replies and delivery statuses."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gwtest import free_port
from twilio.request_validator import RequestValidator

from gateway import config, server
from gateway.evidence import parse_evidence
from gateway.sms import service

TWILIO_SID, TWILIO_TOKEN = "AC0123456789abcdef0123456789abcdef", "twilio-auth-token"
VONAGE_SIGNING_SECRET = "vonage-signing-secret"
ACME_NUMBER = "+447400123000"
BLOOM_NUMBER = "+447400123001"
PERSON = "+447400123456"
INBOUND_TWILIO = "/sms/inbound/twilio"


TOML = """
[gateway]
data_dir = "{data}"
mode = "{mode}"

[smtp]
listen = "127.0.0.1:{smtp_port}"

[http]
listen = "127.0.0.1:{http_port}"
public_url = "{public_url}"
admin_token = "test-admin-token"

[unsubscribe]
secret = "sms-test-secret"

[delivery]
upstream = "maildir:{data}/outbox"

[sms]
provider = "{provider}"
stop_text = "Reply STOP to opt out"
inbound_forward_url = "{forward_url}"
outbox = "{data}/sms-outbox.jsonl"

[sms.twilio]
account_sid = "{twilio_sid}"
auth_token = "{twilio_token}"
api_base = "{provider_base}"

[sms.vonage]
api_key = "vonage-key"
api_secret = "vonage-secret"
signature_secret = "{vonage_secret}"
api_base = "{provider_base}"
signature_method = "sha256"

[[org]]
id = "acme"
name = "Acme Garden Ltd"
type = "commercial"
default_region = "GB"
{acme_extra}

[[org]]
id = "bloom"
name = "Bloom & Sons"
type = "commercial"

[[stream]]
id = "acme-news"
org = "acme"
purpose = "marketing"
category = "garden-tools"
api_key = "sk_news"
sms_from = ["{acme_number}", "ACME"]

[[stream]]
id = "acme-strict"
org = "acme"
purpose = "marketing"
nature = "commercial"
category = "garden-tools"
api_key = "sk_strict"
sms_from = ["{acme_number}"]
allow_headers = false

[[stream]]
id = "acme-service"
org = "acme"
purpose = "service"
api_key = "sk_service"
sms_from = ["{acme_number}"]

[[stream]]
id = "bloom-news"
org = "bloom"
purpose = "marketing"
api_key = "sk_bloom"
sms_from = ["{bloom_number}"]
"""


def twilio_form(body: str, to: str = ACME_NUMBER, sid: str = "SMin0001",
                **extra: str) -> dict[str, str]:
    """The form of a Twilio inbound webhook: `body` texted from PERSON to `to`."""
    return {"MessageSid": sid, "AccountSid": "AC0123", "From": PERSON, "To": to,
            "Body": body, "NumMedia": "0", **extra}


def vonage_sign(params: dict[str, str], secret: str = VONAGE_SIGNING_SECRET) -> dict[str, str]:
    """Vonage's signed-webhook recipe (HMAC-SHA256, `&` and `=` in values replaced)."""
    signed = {**params, "timestamp": str(int(time.time())), "nonce": "n-1"}
    data = "".join(f"&{k}={v.replace('&', '_').replace('=', '_')}"
                   for k, v in sorted(signed.items()))
    signed["sig"] = hmac.new(secret.encode(), data.encode(), hashlib.sha256).hexdigest().upper()
    return signed


@dataclass
class Recorder:
    """A small HTTP server that records every request and answers from a script."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    replies: list[Any] = field(default_factory=list)  # (status, json) tuples; last repeats
    base: str = ""
    default: Callable[[web.Request, dict[str, str]], web.Response] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.requests.append({"path": request.path, "method": request.method, "form": form,
                              "headers": dict(request.headers), "url": str(request.url)})
        if self.replies:
            status, body = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
            return web.json_response(body, status=status)
        if self.default:
            return self.default(request, form)
        return web.Response(status=204)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.requests) < count:
            if loop.time() > deadline:
                raise AssertionError(f"got {len(self.requests)} of {count} requests")
            await asyncio.sleep(0.02)
        return self.requests


def twilio_resource(request: web.Request, form: dict[str, str]) -> web.Response:
    """What Twilio's Messages API answers for a created message."""
    sid = "SM" + uuid.uuid4().hex
    return web.json_response({
        "sid": sid, "account_sid": request.match_info.get("sid", ""), "to": form["To"],
        "from": form["From"], "body": form["Body"], "status": "queued", "num_segments": "1",
        "date_created": "Mon, 02 Mar 2026 10:00:00 +0000", "price": None,
        "uri": f"/2010-04-01/Accounts/x/Messages/{sid}.json", "direction": "outbound-api",
    }, status=201)


def vonage_answer(request: web.Request, form: dict[str, str]) -> web.Response:
    return web.json_response({"message-count": "1", "messages": [
        {"to": form["to"], "message-id": "0A00000012345678", "status": "0"}]})


def provider_default(request: web.Request, form: dict[str, str]) -> web.Response:
    if request.path == "/sms/json":
        return vonage_answer(request, form)
    return twilio_resource(request, form)


@asynccontextmanager
async def serving(recorder: Recorder) -> AsyncIterator[Recorder]:
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", recorder.handle)
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    recorder.base = f"http://{host}:{port}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


@pytest.fixture
async def provider() -> AsyncIterator[Recorder]:
    """The fake SMS provider (Twilio's and Vonage's send APIs)."""
    async with serving(Recorder(default=provider_default)) as recorder:
        yield recorder


@pytest.fixture
async def app_server() -> AsyncIterator[Recorder]:
    """The fake app: receives forwarded replies and delivery statuses."""
    async with serving(Recorder()) as recorder:
        yield recorder


@dataclass
class Gateway:
    running: server.RunningGateway
    url: str
    http: aiohttp.ClientSession

    @property
    def rt(self):
        return self.running.runtime

    @property
    def settings(self) -> config.Settings:
        return self.rt.settings

    def seed_consent(self, address: str = PERSON, org: str = "acme") -> int:
        record = parse_evidence({
            "org": org, "channel": "sms", "address": address, "basis": "consent",
            "obtained_at": "2026-01-10T10:00:00Z", "source": "signup form v3",
        }, {o.id: o.default_region for o in self.settings.orgs.values()})
        return self.rt.ledger.record_evidence(record, "test")

    def seed_soft_opt_in(self, address: str = PERSON, category: str = "garden-tools",
                         obtained_at: str = "2026-01-10T10:00:00Z") -> int:
        """A purchase from acme, opt-out offered: a soft opt-in for similar products."""
        record = parse_evidence({
            "org": "acme", "channel": "sms", "address": address, "basis": "soft_opt_in",
            "context": "sale", "opt_out_offered": True, "categories": [category],
            "obtained_at": obtained_at, "source": "checkout, opt-out box shown",
        }, {o.id: o.default_region for o in self.settings.orgs.values()})
        return self.rt.ledger.record_evidence(record, "test")

    def opt_outs(self, address: str = PERSON) -> list[dict]:
        return [dict(r) for r in self.rt.ledger.opt_out_rows(address)]

    async def post_twilio(self, form: dict[str, str], signed_url: str | None = None,
                          signature: str | None = "sign") -> tuple[int, str]:
        """POST a Twilio inbound webhook, signed over `signed_url` (default: public_url +
        path) as Twilio signs, or with `signature` as given (None: no header)."""
        url = signed_url or self.settings.http.public_url + INBOUND_TWILIO
        headers = {}
        if signature == "sign":
            headers["X-Twilio-Signature"] = RequestValidator(TWILIO_TOKEN).compute_signature(
                url, form)
        elif signature is not None:
            headers["X-Twilio-Signature"] = signature
        async with self.http.post(self.url + INBOUND_TWILIO, data=form,
                                  headers=headers) as resp:
            return resp.status, await resp.text()

    async def send_json(self, payload: Any, key: str = "sk_news") -> tuple[int, dict]:
        async with self.http.post(f"{self.url}/api/v1/sms", json=payload,
                                  headers={"Authorization": f"Bearer {key}"}) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def start_gateway(tmp_path: Path, provider: Recorder, monkeypatch):
    """Start the whole gateway in-process: `await start_gateway(provider="twilio", ...)`."""
    monkeypatch.setattr(service, "PROVIDER_BACKOFF", 0.01)
    monkeypatch.setattr(service, "FORWARD_BACKOFF", 0.01)
    started: list[Gateway] = []
    http = aiohttp.ClientSession()

    async def start(**over: Any) -> Gateway:
        # A free port can be taken by another process before we bind it: try again.
        for attempt in range(5):
            try:
                return await start_once(**over)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    async def start_once(**over: Any) -> Gateway:
        http_port = free_port()
        values: dict[str, Any] = {
            "data": str(tmp_path / f"data{len(started)}"), "mode": "enforce",
            "smtp_port": free_port(), "http_port": http_port,
            "public_url": f"http://127.0.0.1:{http_port}", "provider": "twilio",
            "forward_url": "", "twilio_sid": TWILIO_SID, "twilio_token": TWILIO_TOKEN,
            "provider_base": provider.base, "vonage_secret": VONAGE_SIGNING_SECRET,
            "acme_number": ACME_NUMBER, "bloom_number": BLOOM_NUMBER, "acme_extra": "",
        }
        values.update(over)
        settings = config.parse(textwrap.dedent(TOML.format(**values)), None, tmp_path)
        running = await server.start(settings)
        gateway = Gateway(running, f"http://127.0.0.1:{http_port}", http)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.running.stop()
    await http.close()
