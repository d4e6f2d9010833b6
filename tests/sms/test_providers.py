"""Provider adapters against fake Twilio/Vonage servers on loopback, and the JSONL outbox."""

import asyncio
import base64
import json
import re
import socket
from datetime import datetime
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.sms.providers import (
    OutboundSms,
    OutboxProvider,
    ProviderError,
    RecipientOptedOut,
    SmsProvider,
    TwilioProvider,
    VonageProvider,
    form_body,
    make_provider,
)

SID, TOKEN = "AC00000000000000000000000000000001", "twilio-auth-token"
TEXT = OutboundSms(
    to="+447700900123",
    from_="+447400123000",
    body="Spring sale. Reply STOP to opt out",
    status_callback="https://gateway.example.test/sms/status",
    client_ref="decision-42",
)


class FakeProviderServer:
    """Answers each POST with the next scripted reply (the last one repeats) and records it."""

    def __init__(self):
        self.requests: list[dict] = []
        self.replies: list = []
        self.release = asyncio.Event()

    def reply(self, *replies):
        self.replies = list(replies)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        self.requests.append(
            {"path": request.path, "form": dict(form), "auth": request.headers.get("Authorization")}
        )
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply == "hang":
            await self.release.wait()
            return web.Response(status=504)
        status, body = reply
        if isinstance(body, str):
            return web.Response(status=status, text=body, content_type="text/html")
        return web.json_response(body, status=status)


@pytest.fixture
async def fake():
    server = FakeProviderServer()
    app = web.Application()
    app.router.add_post("/{tail:.*}", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base = f"http://{host}:{port}"
    yield server
    server.release.set()
    await runner.cleanup()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def twilio(fake, session, **kwargs):
    options = {"timeout": 2, "retries": 2, "backoff": 0.001, **kwargs}
    return TwilioProvider(SID, TOKEN, fake.base, lambda: session, **options)


def vonage(fake, session, **kwargs):
    options = {"timeout": 2, "retries": 2, "backoff": 0.001, **kwargs}
    return VonageProvider("vonage-key", "vonage-secret", fake.base, lambda: session, **options)


def twilio_resource(sid="SM" + "a" * 32, status="queued"):
    return {"sid": sid, "status": status, "to": TEXT.to, "from": TEXT.from_, "body": TEXT.body}


def twilio_error(code, message, status=400):
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def vonage_answer(*parts):
    return {"message-count": str(len(parts)), "messages": list(parts)}


def vonage_part(status="0", message_id="0A0000000123ABCD1", error_text=None):
    part = {"to": "447700900123", "message-id": message_id, "status": status}
    if error_text:
        part["error-text"] = error_text
    return part


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Twilio


async def test_twilio_success_answers_the_message_resource(fake, session):
    fake.reply((201, twilio_resource()))
    result = await twilio(fake, session).send(TEXT)
    assert (result.message_id, result.status) == ("SM" + "a" * 32, "queued")
    assert result.raw == twilio_resource()


async def test_twilio_request_is_a_form_post_to_the_messages_resource_with_basic_auth(
    fake, session
):
    fake.reply((201, twilio_resource()))
    await twilio(fake, session).send(TEXT)
    [request] = fake.requests
    assert request["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request["form"] == {
        "To": TEXT.to,
        "From": TEXT.from_,
        "Body": TEXT.body,
        "StatusCallback": TEXT.status_callback,
    }
    assert request["auth"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()


async def test_twilio_request_without_status_callback_leaves_it_out(fake, session):
    fake.reply((201, twilio_resource()))
    await twilio(fake, session).send(OutboundSms(to=TEXT.to, from_=TEXT.from_, body="hi"))
    assert "StatusCallback" not in fake.requests[0]["form"]


async def test_twilio_21610_raises_recipient_opted_out_without_retrying(fake, session):
    fake.reply((400, twilio_error(21610, "Attempt to send to unsubscribed recipient")))
    with pytest.raises(RecipientOptedOut) as raised:
        await twilio(fake, session).send(TEXT)
    assert (raised.value.status, raised.value.code, raised.value.retryable) == (400, "21610", False)
    assert raised.value.message == "Attempt to send to unsubscribed recipient"
    assert len(fake.requests) == 1


async def test_twilio_other_4xx_raises_provider_error_without_retrying(fake, session):
    fake.reply((400, twilio_error(21211, "The 'To' number is not a valid phone number.")))
    with pytest.raises(ProviderError) as raised:
        await twilio(fake, session).send(TEXT)
    assert not isinstance(raised.value, RecipientOptedOut)
    assert (raised.value.code, raised.value.retryable) == ("21211", False)
    assert "not a valid phone number" in str(raised.value)
    assert len(fake.requests) == 1


async def test_twilio_500_twice_then_success_is_retried(fake, session):
    fake.reply(
        (500, twilio_error(20500, "Internal Server Error", 500)),
        (500, twilio_error(20500, "Internal Server Error", 500)),
        (201, twilio_resource()),
    )
    result = await twilio(fake, session).send(TEXT)
    assert result.message_id == "SM" + "a" * 32
    assert len(fake.requests) == 3


async def test_twilio_429_is_retried(fake, session):
    fake.reply((429, twilio_error(20429, "Too Many Requests", 429)), (201, twilio_resource()))
    await twilio(fake, session).send(TEXT)
    assert len(fake.requests) == 2


async def test_twilio_always_500_raises_retryable_provider_error_after_the_retries(fake, session):
    fake.reply((500, twilio_error(20500, "Internal Server Error", 500)))
    with pytest.raises(ProviderError) as raised:
        await twilio(fake, session, retries=3).send(TEXT)
    assert (raised.value.status, raised.value.retryable) == (500, True)
    assert len(fake.requests) == 4


async def test_twilio_non_json_error_page_is_reported_by_its_text(fake, session):
    fake.reply((502, "<html><body>Bad Gateway</body></html>"))
    with pytest.raises(ProviderError, match="Bad Gateway") as raised:
        await twilio(fake, session, retries=0).send(TEXT)
    assert (raised.value.status, raised.value.code, raised.value.retryable) == (502, None, True)


async def test_twilio_timeout_is_retried_then_raises(fake, session):
    fake.reply("hang")
    with pytest.raises(ProviderError, match="timed out") as raised:
        await twilio(fake, session, timeout=0.3, retries=1).send(TEXT)
    assert (raised.value.status, raised.value.retryable) == (None, True)
    assert len(fake.requests) == 2


async def test_twilio_timeout_then_success_is_retried(fake, session):
    fake.reply("hang", (201, twilio_resource()))
    result = await twilio(fake, session, timeout=0.3).send(TEXT)
    assert result.status == "queued"
    assert len(fake.requests) == 2


async def test_twilio_unreachable_raises_retryable_provider_error(session):
    provider = TwilioProvider(
        SID, TOKEN, f"http://127.0.0.1:{closed_port()}", lambda: session, retries=1, backoff=0.001
    )
    with pytest.raises(ProviderError, match="unreachable") as raised:
        await provider.send(TEXT)
    assert raised.value.retryable


# Vonage


async def test_vonage_success_answers_the_first_message_id(fake, session):
    fake.reply((200, vonage_answer(vonage_part())))
    result = await vonage(fake, session).send(TEXT)
    assert (result.message_id, result.status) == ("0A0000000123ABCD1", "queued")
    assert result.raw == vonage_answer(vonage_part())


async def test_vonage_request_is_a_form_post_with_numbers_without_plus(fake, session):
    fake.reply((200, vonage_answer(vonage_part())))
    await vonage(fake, session).send(TEXT)
    [request] = fake.requests
    assert request["path"] == "/sms/json"
    assert request["form"] == {
        "api_key": "vonage-key",
        "api_secret": "vonage-secret",
        "to": "447700900123",
        "from": "447400123000",
        "text": TEXT.body,
        "callback": TEXT.status_callback,
        "client-ref": "decision-42",
    }


async def test_vonage_alphanumeric_sender_is_sent_unchanged(fake, session):
    fake.reply((200, vonage_answer(vonage_part())))
    await vonage(fake, session).send(OutboundSms(to=TEXT.to, from_="AcmeGarden", body="hi"))
    assert fake.requests[0]["form"]["from"] == "AcmeGarden"


async def test_vonage_text_outside_gsm7_is_sent_as_unicode(fake, session):
    fake.reply((200, vonage_answer(vonage_part())))
    await vonage(fake, session).send(OutboundSms(to=TEXT.to, from_=TEXT.from_, body="Hi 👋"))
    assert fake.requests[0]["form"]["type"] == "unicode"


async def test_vonage_barred_number_raises_recipient_opted_out(fake, session):
    fake.reply((200, vonage_answer(vonage_part("7", error_text="Number barred."))))
    with pytest.raises(RecipientOptedOut) as raised:
        await vonage(fake, session).send(TEXT)
    assert (raised.value.code, raised.value.message) == ("7", "Number barred.")
    assert len(fake.requests) == 1


async def test_vonage_throttled_is_retried(fake, session):
    fake.reply(
        (200, vonage_answer(vonage_part("1", error_text="Throughput Rate Exceeded"))),
        (200, vonage_answer(vonage_part())),
    )
    result = await vonage(fake, session).send(TEXT)
    assert result.message_id == "0A0000000123ABCD1"
    assert len(fake.requests) == 2


async def test_vonage_bad_credentials_raise_provider_error_without_retrying(fake, session):
    fake.reply((200, vonage_answer(vonage_part("4", error_text="Bad Credentials"))))
    with pytest.raises(ProviderError, match="Bad Credentials") as raised:
        await vonage(fake, session).send(TEXT)
    assert (raised.value.code, raised.value.retryable) == ("4", False)
    assert len(fake.requests) == 1


async def test_vonage_throttled_second_part_is_not_retried_once_the_first_part_went(fake, session):
    fake.reply((200, vonage_answer(vonage_part(), vonage_part("1", "", "Throttled"))))
    with pytest.raises(ProviderError) as raised:
        await vonage(fake, session).send(TEXT)
    assert (raised.value.code, raised.value.retryable) == ("1", False)
    assert len(fake.requests) == 1


async def test_vonage_http_500_is_retried(fake, session):
    fake.reply((500, "oops"), (200, vonage_answer(vonage_part())))
    await vonage(fake, session).send(TEXT)
    assert len(fake.requests) == 2


# Outbox


async def test_outbox_appends_one_json_line_per_text(tmp_path):
    outbox = OutboxProvider(tmp_path / "sms-outbox.jsonl")
    first = await outbox.send(TEXT)
    second = await outbox.send(OutboundSms(to="+447700900456", from_=TEXT.from_, body="Привет 👋"))
    lines = (tmp_path / "sms-outbox.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["message_id"] for r in records] == [first.message_id, second.message_id]
    assert records[0] | {"message_id": "-", "created": "-"} == {
        "to": TEXT.to,
        "from": TEXT.from_,
        "body": TEXT.body,
        "message_id": "-",
        "created": "-",
    }
    assert records[1]["body"] == "Привет 👋"
    assert datetime.fromisoformat(records[0]["created"]).tzinfo is not None


async def test_outbox_message_ids_look_like_twilio_sids(tmp_path):
    result = await OutboxProvider(tmp_path / "out.jsonl").send(TEXT)
    assert re.fullmatch(r"SM[0-9a-f]{32}", result.message_id)
    assert result.status == "sent"


async def test_outbox_creates_its_directory(tmp_path):
    path = tmp_path / "var" / "sms-outbox.jsonl"
    await OutboxProvider(path).send(TEXT)
    assert path.exists()


async def test_outbox_keeps_concurrent_texts_on_separate_lines(tmp_path):
    outbox = OutboxProvider(tmp_path / "out.jsonl")
    await asyncio.gather(*(outbox.send(TEXT) for _ in range(20)))
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert len({json.loads(line)["message_id"] for line in lines}) == 20


# make_provider

TWILIO_CONFIG = {"account_sid": SID, "auth_token": TOKEN, "api_base": "https://api.twilio.com"}
VONAGE_CONFIG = {
    "api_key": "k",
    "api_secret": "s",
    "signature_secret": "",
    "api_base": "https://rest.nexmo.com",
}


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("outbox", OutboxProvider), ("twilio", TwilioProvider), ("vonage", VonageProvider)],
)
async def test_make_provider_builds_the_configured_provider(kind, cls, tmp_path, session):
    provider = make_provider(
        kind,
        outbox_path=tmp_path / "out.jsonl",
        twilio=TWILIO_CONFIG,
        vonage=VONAGE_CONFIG,
        session=session,
    )
    assert isinstance(provider, cls)
    assert isinstance(provider, SmsProvider)
    assert provider.name == kind


async def test_make_provider_sends_through_the_given_session(fake, session):
    fake.reply((201, twilio_resource()))
    provider = make_provider(
        "twilio",
        outbox_path="unused",
        twilio={**TWILIO_CONFIG, "api_base": fake.base},
        vonage={},
        session=session,
        backoff=0.001,
    )
    assert (await provider.send(TEXT)).status == "queued"


def test_make_provider_rejects_an_unknown_kind():
    with pytest.raises(ConfigError, match="sms.provider.*unknown provider 'pigeon'"):
        make_provider("pigeon", outbox_path="x", twilio={}, vonage={})


def test_make_provider_names_the_missing_credential():
    with pytest.raises(ConfigError, match="sms.twilio.auth_token"):
        make_provider(
            "twilio",
            outbox_path="x",
            twilio={**TWILIO_CONFIG, "auth_token": ""},
            vonage={},
            session=lambda: None,
        )


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=12), st.text(max_size=3000), max_size=5))
def test_form_body_is_what_urlencode_makes(form):
    """The remembered quoting gives the bytes urlencode (and aiohttp's FormData) gives,
    for any text, long or short, asked once or twice."""
    expected = urlencode(form, doseq=True, encoding="utf-8").encode()
    assert form_body(form) == expected
    assert form_body(form) == expected


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '"a string"', "{", "null"])
def test_an_answer_that_is_no_json_object_reads_as_empty(text):
    from gateway.sms.providers import _json_object

    assert _json_object(text) == {}
