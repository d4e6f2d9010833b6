"""The SMS provider times out or answers 500: each text is tried four times (the first
try and three retries), then the app gets a clear error; it is never reported as sent."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import uuid

import aiohttp
import pytest
from aiohttp import web
from gwtest import make_settings, seed

from gateway import server
from gateway.config import TwilioSettings, VonageSettings
from gateway.sms import service

pytestmark = pytest.mark.timeout(30)

PERSON = "+447400123456"


class FlakyProvider:
    """Twilio's and Vonage's send APIs; `script` holds one behaviour per request ("slow",
    an HTTP status, or "ok"); when it runs out, "ok"."""

    def __init__(self) -> None:
        self.script: list = []
        self.requests = 0
        self.created: list[str] = []
        self.base = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        form = await request.post()
        step = self.script.pop(0) if self.script else "ok"
        if step == "slow":
            await asyncio.sleep(5)  # never answers in time; creates nothing
            return web.Response(status=504)
        if step != "ok":
            return web.json_response({"message": "internal error"},
                                     status=step)
        sid = "SM" + uuid.uuid4().hex
        self.created.append(sid)
        if request.path == "/sms/json":
            return web.json_response({"message-count": "1", "messages": [
                {"to": form["to"], "message-id": sid, "status": "0"}]})
        return web.json_response({"sid": sid, "status": "queued", "to": form["To"],
                                  "from": form["From"], "body": form["Body"]}, status=201)


@pytest.fixture
async def provider():
    p = FlakyProvider()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", p.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    p.base = f"http://{host}:{port}"
    yield p
    await runner.cleanup()


@pytest.fixture
async def start_gateway(tmp_path, provider, monkeypatch):
    monkeypatch.setattr(service, "PROVIDER_TIMEOUT", 0.3)
    monkeypatch.setattr(service, "PROVIDER_BACKOFF", 0.01)
    running = []

    async def start(kind: str = "twilio"):
        settings = make_settings(tmp_path)
        sms = dataclasses.replace(
            settings.sms, provider=kind,
            twilio=TwilioSettings("AC0123", "twilio-token", provider.base),
            vonage=VonageSettings("key", "secret", "", provider.base))
        gw = await server.start(dataclasses.replace(settings, sms=sms))
        running.append(gw)
        seed(gw.runtime, channel="sms", address=PERSON, basis="consent", source="form")
        return gw

    yield start
    for gw in running:
        await gw.stop()


async def post_json(gw, body: dict) -> tuple[int, dict]:
    url = f"{gw.runtime.settings.http.public_url}/api/v1/sms"
    async with aiohttp.ClientSession() as http, http.post(url, json=body,
                         headers={"Authorization": "Bearer sk_news"}) as resp:
        return resp.status, await resp.json()


async def post_twilio(gw, fields: dict) -> tuple[int, dict]:
    url = (f"{gw.runtime.settings.http.public_url}/2010-04-01/Accounts/acme-news/"
           "Messages.json")
    auth = base64.b64encode(b"acme-news:sk_news").decode()
    async with aiohttp.ClientSession() as http, http.post(url, data=fields,
                         headers={"Authorization": f"Basic {auth}"}) as resp:
        return resp.status, await resp.json()


def assert_not_sent(gw, provider) -> None:
    assert provider.created == []
    health = gw.runtime.health["sms_provider"]
    assert "error" in health and "last_ok" not in health
    assert not gw.runtime.settings.sms.outbox.exists()


async def test_a_provider_that_times_out_is_retried_then_the_app_gets_a_clear_502(
        start_gateway, provider):
    gw = await start_gateway()
    provider.script = ["slow"] * 4
    status, answer = await post_json(gw, {"to": PERSON, "body": "Spring sale"})
    assert status == 502 and answer["error"] == "provider_error"
    assert "timed out" in answer["message"] and "retry later" in answer["message"]
    assert provider.requests == 4
    assert_not_sent(gw, provider)


@pytest.mark.parametrize("kind", ["twilio", "vonage"])
async def test_a_provider_answering_500_gives_the_twilio_sdk_error_20503(start_gateway,
                                                                        provider, kind):
    gw = await start_gateway(kind)
    provider.script = [500] * 4
    status, answer = await post_twilio(gw, {"To": PERSON, "Body": "Spring sale"})
    assert status == 502 and answer["code"] == 20503
    assert "HTTP 500" in answer["message"] and "retry later" in answer["message"]
    assert provider.requests == 4
    assert_not_sent(gw, provider)


async def test_a_provider_that_recovers_after_a_timeout_sends_the_text_once(start_gateway,
                                                                           provider):
    gw = await start_gateway()
    provider.script = ["slow", 503]
    status, answer = await post_json(gw, {"to": PERSON, "body": "Spring sale"})
    assert status == 202 and provider.created == [answer["message_id"]]
    assert provider.requests == 3
