"""Twilio-compatible sending: ``POST /2010-04-01/Accounts/{stream id}/Messages.json``.

An app built on Twilio's SDK changes only the API base URL, and logs in with the stream
id as account sid and the stream's api_key as auth token. Form fields ``To``, ``From``,
``Body``, ``StatusCallback``; ``MessagingServiceSid`` is accepted and ignored (the
stream's first ``sms_from`` is the default sender); media is refused.

Allowed: 201 with a Twilio message resource: the app's account sid and URIs, our final
body and segment count (the count the contract promises, the same on every path), and,
when the provider is Twilio, its status, dates and price. Errors in Twilio's shape
``{"code", "message", "more_info", "status"}``:

| case                            | status          | code                        |
|---------------------------------|-----------------|-----------------------------|
| wrong account or credentials    | 401             | 20003                       |
| blocked (or provider opt-out)   | 400             | 21610                       |
| bad To / Body / callback        | 400             | 21211, 21602, 21609…        |
| From not in the stream's        | 422             | 21212                       |
| sms_from                        |                 |                             |
| provider did not take it        | provider's 4xx, | provider's code, else 20503 |
|                                 | else 502        |                             |
| store unavailable, or any other | 503             | 20503                       |
| failure of ours                 |                 |                             |

Error messages say what to do; they never carry an exception's text (the log has it).
"""

from __future__ import annotations

import functools
import json
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..config import Stream
from ..errors import StoreUnavailable
from ..web.common import basic_credentials
from .channel import channel, log_failure
from .deferral import TextDeferred
from .outbound import (
    INTERNAL_ERROR,
    STORE_UNAVAILABLE,
    SentText,
    TextBlocked,
    TextRejected,
    TextRequest,
    provider_problem,
)
from .providers import ProviderError
from .segments import measure

routes = web.RouteTableDef()

API_VERSION = "2010-04-01"
UNAVAILABLE = 20503
TWILIO_NAMES = {"to": "To", "from": "From", "body": "Body", "status_callback": "StatusCallback"}
# Fields of the provider's own resource (when it is Twilio) that we pass on as they are.
PROVIDER_FIELDS = ("status", "date_created", "date_updated", "date_sent", "price",
                   "price_unit", "error_code", "error_message")


def dumps(value: Any) -> str:
    """JSON text of an answer: orjson encodes a text's answer several times faster than the
    json module (with the response around it, 6.8 -> 2.2 µs); the same JSON, written
    without spaces. What orjson refuses (a lone surrogate in a string) the json module
    writes."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value)


def twilio_error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message,
                              "more_info": f"https://www.twilio.com/docs/errors/{code}",
                              "status": status}, status=status, dumps=dumps)


def message_resource(stream: Stream, sent: SentText) -> dict[str, Any]:
    """A Twilio message resource for `sent`, as Twilio's SDK parses it."""
    sid = sent.result.message_id
    uri = f"/{API_VERSION}/Accounts/{stream.id}/Messages/{sid}"
    now = _http_date(int(time.time()))
    resource: dict[str, Any] = {
        "account_sid": stream.id, "api_version": API_VERSION, "body": sent.body,
        "date_created": now, "date_sent": None, "date_updated": now,
        "direction": "outbound-api", "error_code": None, "error_message": None,
        "from": sent.from_, "messaging_service_sid": None, "num_media": "0",
        "num_segments": str(sent.segments.segments), "price": None, "price_unit": None,
        "sid": sid, "status": sent.result.status or "queued",
        "subresource_uris": {"media": f"{uri}/Media.json"}, "to": sent.to,
        "uri": f"{uri}.json",
    }
    if sent.provider == "twilio":
        resource.update({k: sent.result.raw[k] for k in PROVIDER_FIELDS
                         if k in sent.result.raw})
    return resource


def scheduled_resource(stream: Stream, exc: TextDeferred) -> dict[str, Any]:
    """A message held for the recipient's quiet hours, as Twilio shows a scheduled one:
    `status` "scheduled", `date_sent` null, our id as its sid."""
    sid = exc.message_id
    uri = f"/{API_VERSION}/Accounts/{stream.id}/Messages/{sid}"
    now = _http_date(int(time.time()))
    return {
        "account_sid": stream.id, "api_version": API_VERSION, "body": exc.body,
        "date_created": now, "date_sent": None, "date_updated": now,
        "direction": "outbound-api", "error_code": None, "error_message": None,
        "from": exc.from_, "messaging_service_sid": None, "num_media": "0",
        "num_segments": str(measure(exc.body).segments), "price": None, "price_unit": None,
        "sid": sid,
        "status": "scheduled", "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": exc.to, "uri": f"{uri}.json", "send_at": exc.send_at.isoformat(),
    }


@functools.lru_cache(maxsize=4)
def _http_date(second: int) -> str:
    """RFC 2822 date of a Unix second, as Twilio writes date_created (made once a second)."""
    return format_datetime(datetime.fromtimestamp(second, UTC))


def blocked(exc: TextBlocked) -> web.Response:
    return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient "
                                    f"(blocked: {exc.decision.reason})")


def provider_failed(exc: ProviderError) -> web.Response:
    status = exc.status if exc.status and 400 <= exc.status < 500 else 502
    code = int(exc.code) if exc.code and exc.code.isdigit() else UNAVAILABLE
    return twilio_error(status, code, provider_problem(exc))


@routes.post(f"/{API_VERSION}/Accounts/{{account}}/Messages.json")
async def create_message(request: web.Request) -> web.Response:
    sms = channel(request)
    user, password = basic_credentials(request) or ("", "")
    stream = sms.relay.stream_for_account(request.match_info["account"], user, password)
    if stream is None:
        response = twilio_error(401, 20003, "Authenticate")
        response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return response
    try:
        form = await request.post()
    except (ValueError, LookupError, HttpProcessingError):  # bad bytes, charset, multipart
        return twilio_error(400, 21601, "The request body is not a readable form")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if "MediaUrl" in fields:
        return twilio_error(400, 21620, "Media messages are not supported by this gateway")
    req = TextRequest(to=fields.get("To", ""), body=fields.get("Body", ""),
                      from_=fields.get("From") or None,
                      status_callback=fields.get("StatusCallback") or None)
    try:
        sent = await sms.relay.send(stream, req)
    except TextRejected as exc:
        name = TWILIO_NAMES.get(exc.field, exc.field)
        return twilio_error(exc.status, exc.twilio_code, f"The '{name}' parameter is "
                                                         f"invalid: {exc.detail}")
    except TextBlocked as exc:
        return blocked(exc)
    except TextDeferred as exc:
        return web.json_response(scheduled_resource(stream, exc), status=201, dumps=dumps)
    except ProviderError as exc:
        return provider_failed(exc)
    except StoreUnavailable as exc:
        log_failure("sms_not_sent", exc, stream=stream.id)
        return twilio_error(503, UNAVAILABLE, STORE_UNAVAILABLE)
    except Exception as exc:  # noqa: BLE001 - logged; the app retries on 503, not a 500
        log_failure("sms_not_sent", exc, stream=stream.id)
        return twilio_error(503, UNAVAILABLE, INTERNAL_ERROR)
    return web.json_response(message_resource(stream, sent), status=201, dumps=dumps)
