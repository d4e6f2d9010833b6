"""The ESP webhooks: `POST /hooks/sendgrid`, `/hooks/mailgun`, `/hooks/postmark`.

Order of checks, each answering before anything is recorded:
1. the provider is not configured (`[esp.NAME]` without its credential): 404;
2. a body over the provider's limit: 413 (read no further);
3. SendGrid: a stale timestamp or a wrong signature: 403 (the signature covers the raw
   body, so it is checked before the body is parsed). Postmark: wrong or missing basic
   auth: 401 with a challenge;
4. a body that is not JSON of the provider's shape: 400;
5. Mailgun (its signature is inside the body): a stale timestamp or a wrong signature
   403; a token seen before (a replay, on any gateway sharing the ledger) 403;
6. the events: each recorded once (`gateway.optout_events`); the answer counts them.
The ledger away: 503 (the provider retries; a Mailgun token is then forgotten again so
its retry is not taken for a replay)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime, timedelta

from aiohttp import web

from ..errors import StoreUnavailable
from ..logs import event
from ..optout_events import OutsideEvent, record_events
from ..web.common import basic_credentials, runtime
from . import signatures
from .events import BadPayload, mailgun_event, postmark_event, sendgrid_events

log = logging.getLogger("gateway.esp.hooks")

routes = web.RouteTableDef()

# Body limits. SendGrid posts batches of up to 768 KB; Mailgun and Postmark one event each.
MAX_BODY = {"sendgrid": 1024 * 1024, "mailgun": 256 * 1024, "postmark": 256 * 1024}
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


def _answer(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


def refused(provider: str, problem: str) -> web.Response:
    event(log, "esp_webhook_refused", logging.WARNING, provider=provider, problem=problem)
    return _answer(403, "forbidden", "signature missing, wrong or stale")


async def read_body(request: web.Request, provider: str) -> bytes:
    """The raw body, at most MAX_BODY[provider] bytes; 413 beyond (not read further)."""
    limit = MAX_BODY[provider]
    too_big = web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length
                                            or limit + 1)
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    chunks, size = [], 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes, kind: type) -> object:
    """The body as JSON of `kind` (list or dict); 400 otherwise."""
    what = "an array" if kind is list else "an object"
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # malformed, not UTF-8, too deep, huge numbers
        raise web.HTTPBadRequest(text=json.dumps({
            "error": "bad_json", "detail": f"the body is not JSON; send {what}"}),
            content_type="application/json") from None
    if not isinstance(value, kind):
        raise web.HTTPBadRequest(text=json.dumps({
            "error": "bad_json", "detail": f"the body is not {what}"}),
            content_type="application/json")
    return value


async def record(request: web.Request, provider: str, events: list[OutsideEvent],
                 org: str) -> web.Response:
    rt = runtime(request)
    try:
        counts = await asyncio.to_thread(record_events, rt, events, org or None)
    except StoreUnavailable as exc:
        event(log, "esp_webhook_not_recorded", logging.ERROR, provider=provider,
              error=repr(exc)[:300])
        return _answer(503, "store_unavailable", "cannot record right now; retry later")
    return web.json_response({"ok": True, **counts})


def _not_configured(provider: str) -> web.Response:
    return _answer(404, "not_found", f"no [esp.{provider}] is configured on this gateway")


@routes.post("/hooks/sendgrid")
async def sendgrid(request: web.Request) -> web.Response:
    esp = runtime(request).settings.esp.get("sendgrid")
    if esp is None:
        return _not_configured("sendgrid")
    body = await read_body(request, "sendgrid")
    timestamp = request.headers.get(SENDGRID_TIMESTAMP)
    if not signatures.fresh(timestamp):
        return refused("sendgrid", "timestamp missing or stale")
    if not signatures.verify_sendgrid(_sendgrid_key(esp.public_key), body,
                                      request.headers.get(SENDGRID_SIGNATURE), timestamp):
        return refused("sendgrid", "signature missing or wrong")
    try:
        events = sendgrid_events(parse_json(body, list))
    except BadPayload as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": "bad_payload", "detail": str(exc)}),
                                 content_type="application/json") from None
    return await record(request, "sendgrid", events, esp.org)


_KEYS: dict[str, object] = {}


def _sendgrid_key(text: str):
    """The configured key, loaded once (checked at start-up by config)."""
    key = _KEYS.get(text)
    if key is None:
        key = _KEYS[text] = signatures.load_sendgrid_key(text)
    return key


@routes.post("/hooks/mailgun")
async def mailgun(request: web.Request) -> web.Response:
    rt = runtime(request)
    esp = rt.settings.esp.get("mailgun")
    if esp is None:
        return _not_configured("mailgun")
    body = parse_json(await read_body(request, "mailgun"), dict)
    signed = body.get("signature")
    parts = [signed.get(k) for k in ("timestamp", "token", "signature")] \
        if isinstance(signed, dict) else []
    if len(parts) != 3 or not all(isinstance(p, str) and p for p in parts):
        return refused("mailgun", "signature missing")
    timestamp, token, signature = parts
    if not signatures.fresh(timestamp):
        return refused("mailgun", "timestamp stale")
    if not signatures.verify_mailgun(esp.signing_key, timestamp, token, signature):
        return refused("mailgun", "signature wrong")
    try:
        found = mailgun_event(body)
    except BadPayload as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": "bad_payload", "detail": str(exc)}),
                                 content_type="application/json") from None
    now = datetime.now(UTC)
    forget = now - timedelta(seconds=2 * signatures.MAX_SKEW_SECONDS)
    try:
        new = await asyncio.to_thread(rt.ledger.note_nonce, "mailgun", token[:200],
                                      now.isoformat(timespec="microseconds"),
                                      forget.isoformat(timespec="microseconds"))
    except StoreUnavailable as exc:
        event(log, "esp_webhook_not_recorded", logging.ERROR, provider="mailgun",
              error=repr(exc)[:300])
        return _answer(503, "store_unavailable", "cannot record right now; retry later")
    if not new:
        return refused("mailgun", "token replayed")
    answer = await record(request, "mailgun", [found] if found else [], esp.org)
    if answer.status == 503:
        # Failing that too, the retry is refused as a replay (the 503 is logged above).
        with contextlib.suppress(StoreUnavailable):
            await asyncio.to_thread(rt.ledger.forget_nonce, "mailgun", token[:200])
    return answer


@routes.post("/hooks/postmark")
async def postmark(request: web.Request) -> web.Response:
    esp = runtime(request).settings.esp.get("postmark")
    if esp is None:
        return _not_configured("postmark")
    if not signatures.same_credentials(basic_credentials(request), esp.username, esp.password):
        event(log, "esp_webhook_refused", logging.WARNING, provider="postmark",
              problem="basic auth missing or wrong")
        return web.Response(status=401, text="basic auth required",
                            headers={"WWW-Authenticate": 'Basic realm="gateway hooks"'})
    body = parse_json(await read_body(request, "postmark"), dict)
    found = postmark_event(body)
    return await record(request, "postmark", [found] if found else [], esp.org)
