"""The providers' webhooks: inbound texts and delivery statuses, signature first.

- ``POST /sms/inbound/twilio``: form fields, ``X-Twilio-Signature`` over
  ``http.public_url`` + path (and query) with ``sms.twilio.auth_token``. Answers TwiML:
  ``<Response><Message>…</Message></Response>`` for a keyword, ``<Response/>`` otherwise.
- ``GET|POST /sms/inbound/vonage``: query, form or JSON fields, ``sig`` checked with
  ``sms.vonage.signature_secret``. Answers 204; a reply goes out through the provider.
- ``GET|POST /sms/status/{id}``: a delivery status for a text whose app asked for one
  (see callbacks.py), checked like the inbound webhook of the configured provider
  (Vonage: when ``signature_secret`` is set), passed on to the app in the background.

Nobody is authenticated before the body is read (the signature covers it), so a body
that cannot be read (malformed or too deeply nested JSON, a number too long to convert,
bytes that are not in the declared charset, an unknown charset, broken multipart)
answers 400 before anything else is done. A missing or wrong signature answers 403 and
records nothing. A signature that cannot be checked because the secret is not configured
answers 500: it is our mistake, not the caller's, and must show up as one. When the
ledger cannot take a keyword, or anything else of ours fails, the answer is 503 (the
provider may retry); no answer carries an exception's text.
"""

from __future__ import annotations

import json
import logging
from xml.sax.saxutils import escape

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..logs import event
from .callbacks import open_callback, twilio_status_form, vonage_status_form
from .channel import SmsChannel, channel, log_failure
from .forward import Form
from .inbound import InboundOutcome, InboundText, owner_of
from .signatures import SignatureError, verify_twilio, verify_vonage

log = logging.getLogger("gateway.sms.webhooks")

routes = web.RouteTableDef()

TWIML = "text/xml"


def twiml(reply: str | None) -> web.Response:
    """TwiML answering with one text, or with nothing."""
    inner = f"<Message>{escape(reply)}</Message>" if reply else ""
    body = '<?xml version="1.0" encoding="UTF-8"?>' + (
        f"<Response>{inner}</Response>" if inner else "<Response/>")
    return web.Response(text=body, content_type=TWIML, charset="utf-8")


async def form_pairs(request: web.Request, with_query: bool) -> Form:
    """The string fields of a form or JSON body, in order, after those of the query
    string when `with_query` (Vonage signs both; Twilio signs the query as part of the
    URL)."""
    pairs = [(k, v) for k, v in request.query.items()] if with_query else []
    if request.method != "POST" or not request.can_read_body:
        return pairs
    if request.content_type == "application/json":
        raw = await request.read()
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise web.HTTPBadRequest(text="expected a JSON object")
            return pairs + [(k, _text(v)) for k, v in body.items() if v is not None]
        except (ValueError, RecursionError):
            # Malformed, not UTF-8, nested too deeply, or a number too long to convert
            # (JSONDecodeError and UnicodeDecodeError are ValueErrors).
            raise web.HTTPBadRequest(text="malformed JSON: send a flat JSON object") from None
    try:
        form = await request.post()
    except (ValueError, LookupError, HttpProcessingError):  # bad bytes, charset, multipart
        raise web.HTTPBadRequest(text="malformed form body: send "
                                      "application/x-www-form-urlencoded UTF-8") from None
    return pairs + [(k, v) for k, v in form.items() if isinstance(v, str)]


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def twilio_signed(sms: SmsChannel, request: web.Request, pairs: Form) -> bool:
    """`X-Twilio-Signature` of this request, as Twilio signs: public URL + path + query."""
    url = sms.rt.settings.http.public_url + request.path_qs
    return verify_twilio(url, pairs, request.headers.get("X-Twilio-Signature"),
                         sms.rt.settings.sms.twilio.auth_token)


def vonage_signed(sms: SmsChannel, pairs: Form) -> bool:
    vonage = sms.rt.settings.sms.vonage
    return verify_vonage(dict(pairs), vonage.signature_secret, method=vonage.signature_method)


def refused(kind: str, provider: str) -> web.Response:
    event(log, "sms_webhook_refused", level=logging.WARNING, kind=kind, provider=provider,
          problem="missing or wrong signature")
    return web.Response(status=403, text="signature missing or wrong")


def misconfigured(kind: str, exc: SignatureError) -> web.Response:
    event(log, "sms_webhook_misconfigured", level=logging.ERROR, kind=kind, problem=str(exc))
    return web.Response(status=500, text="webhook signature secret not configured")


async def handle(sms: SmsChannel, text: InboundText) -> InboundOutcome | None:
    """Record what the text asks for; None when the ledger cannot take it now (the
    provider then retries the webhook, so the opt-out is not lost)."""
    try:
        return await sms.inbound.handle(text)
    except Exception as exc:  # noqa: BLE001 - logged; ledger down or ours: 503, not 500
        log_failure("sms_inbound_not_recorded", exc, provider=text.provider)
        return None


def forward_inbound(sms: SmsChannel, text: InboundText, pairs: Form,
                    twilio_token: str | None) -> None:
    """Hand a non-keyword reply on to the app at inbound_forward_url (background)."""
    url = sms.rt.settings.sms.inbound_forward_url
    if not url:
        event(log, "sms_reply_not_forwarded", provider=text.provider,
              problem="sms.inbound_forward_url is not set")
        return
    org = owner_of(sms.rt.settings, text.recipient)
    headers = {"X-Gateway-Org": org.id} if org else {}
    sms.forwarder.submit("inbound", url, pairs, twilio_token=twilio_token, headers=headers)


@routes.post("/sms/inbound/twilio")
async def twilio_inbound(request: web.Request) -> web.Response:
    sms = channel(request)
    pairs = await form_pairs(request, with_query=False)
    try:
        if not twilio_signed(sms, request, pairs):
            return refused("inbound", "twilio")
    except SignatureError as exc:
        return misconfigured("inbound", exc)
    fields = dict(pairs)
    text = InboundText("twilio", fields.get("From", ""), fields.get("To", ""),
                       fields.get("Body", ""), fields.get("MessageSid", ""),
                       fields.get("OptOutType"))
    outcome = await handle(sms, text)
    if outcome is None:
        return web.Response(status=503, text="cannot record right now; try again")
    if outcome.forward:
        forward_inbound(sms, text, pairs, sms.rt.settings.sms.twilio.auth_token)
    return twiml(outcome.reply)


@routes.get("/sms/inbound/vonage")
@routes.post("/sms/inbound/vonage")
async def vonage_inbound(request: web.Request) -> web.Response:
    sms = channel(request)
    pairs = await form_pairs(request, with_query=True)
    try:
        if not vonage_signed(sms, pairs):
            return refused("inbound", "vonage")
    except SignatureError as exc:
        return misconfigured("inbound", exc)
    fields = dict(pairs)
    text = InboundText("vonage", _plus(fields.get("msisdn", "")), _plus(fields.get("to", "")),
                       fields.get("text", ""), fields.get("messageId", ""))
    outcome = await handle(sms, text)
    if outcome is None:
        return web.Response(status=503, text="cannot record right now; try again")
    if outcome.forward:
        forward_inbound(sms, text, pairs, None)
    elif outcome.reply:
        sms.reply_by_text(text.sender, text.recipient, outcome.reply)
    return web.Response(status=204)


def _plus(number: str) -> str:
    # Vonage writes numbers in international format without "+".
    number = number.strip()
    return "+" + number if number.isdigit() else number


@routes.get("/sms/status/{callback}")
@routes.post("/sms/status/{callback}")
async def delivery_status(request: web.Request) -> web.Response:
    sms = channel(request)
    settings = sms.rt.settings
    target = open_callback(request.match_info["callback"], settings.unsubscribe.secrets)
    stream = settings.stream(target[0]) if target else None
    provider = settings.sms.provider
    # The outbox never calls back; anything claiming to be it is not.
    if target is None or stream is None or provider == "outbox":
        return web.Response(status=404, text="unknown status callback")
    pairs = await form_pairs(request, with_query=provider != "twilio")
    try:
        if provider == "twilio" and not twilio_signed(sms, request, pairs):
            return refused("status", provider)
        if provider == "vonage" and settings.sms.vonage.signature_secret \
                and not vonage_signed(sms, pairs):
            return refused("status", provider)
    except SignatureError as exc:
        return misconfigured("status", exc)
    if provider == "vonage":
        form = vonage_status_form(dict(pairs), stream.id)
    else:
        form = twilio_status_form(pairs, stream.id)
    if stream.api_key:
        sms.forwarder.submit("status", target[1], form, twilio_token=stream.api_key)
    return web.Response(status=204)
