"""`gateway run` on each event loop it offers (`[gateway] event_loop`): uvloop, the
default where it is installed, and asyncio's own. The same real clients get the same
answers: STARTTLS and AUTH, a relayed marketing message with its opt-out, a text, a page."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email import message_from_bytes
from email.policy import default

import aiohttp
import pytest
from gwprocess import SMS_KEY, GatewayProcess, seed

JANE = "jane@example.com"
PHONE = "+447400123456"



@pytest.mark.slow
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_the_gateway_answers_the_same_on_each_event_loop(tmp_path, sink, self_signed,
                                                                 loop):
    cert, key = self_signed
    gw = GatewayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}?tls=none", over=dict(
        gateway_extra=f'event_loop = "{loop}"',
        smtp_extra=f'tls_cert = "{cert}"\ntls_key = "{key}"'))
    seed(gw.data_dir, emails=[JANE], phones=[PHONE])
    gw.start()
    try:
        assert f"loop:     {loop}" in gw.log_text()
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False

        def talk() -> None:
            with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=20) as client:
                client.ehlo()
                client.starttls(context=ctx)
                client.ehlo()
                client.login("acme-news", "news-pass")
                client.sendmail("news@acme.test", [JANE], (
                    f"From: news@acme.test\r\nTo: {JANE}\r\nSubject: Spring sale\r\n"
                    "Message-ID: <loop-1@acme.test>\r\n\r\nTwenty percent off.\r\n").encode())

        await asyncio.to_thread(talk)
        (_, rcpts, data), = await sink.wait_for(1)
        assert rcpts == [JANE]
        assert message_from_bytes(data, policy=default)["List-Unsubscribe"]
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{gw.url}/api/v1/sms", headers=SMS_KEY,
                                 json={"to": PHONE, "body": "Spring sale"}) as resp:
                assert resp.status == 202, await resp.text()
                assert "STOP" in (await resp.json())["body"]
            async with http.get(f"{gw.url}/healthz") as resp:
                assert resp.status == 200
    finally:
        # In a thread: the sink answers the QUIT of its delivery connection from this loop.
        assert await asyncio.to_thread(gw.terminate) == 0
