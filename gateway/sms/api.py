"""``POST /api/v1/sms``: send one text, JSON in and out, a stream's api_key as bearer token.

Request: ``{"to", "body", "from"?, "purpose"?, "nature"?, "category"?, "status_callback"?}``.

| outcome                         | status | body                                             |
|---------------------------------|--------|--------------------------------------------------|
| sent                            | 202    | status, decision, to, from, body (final),        |
|                                 |        | encoding, segments, warnings, provider,          |
|                                 |        | message_id (the provider's), gateway_message_id  |
| deferred (quiet hours)          | 202    | status "deferred", send_at, decision, to, from,  |
|                                 |        | body (as given), gateway_message_id              |
| blocked (or provider opt-out)   | 403    | error "blocked", reason, explanation             |
| bad JSON / field / number       | 400    | error (bad_json, invalid_request, invalid_number,|
|                                 |        | …), field, detail                                |
| not allowed on this stream      | 422    | error from_not_allowed (a sender not in sms_from)|
|                                 |        | or override_not_allowed (purpose, nature or      |
|                                 |        | category without allow_headers), field, detail   |
| no or wrong api_key             | 401    | error "unauthorized"                             |
| provider did not take it        | 502    | error "provider_error", provider, code, message  |
| ledger unavailable              | 503    | error "store_unavailable", detail (try again)    |
| any other failure of ours       | 503    | error "internal_error", detail (try again)       |

Error bodies say what to do; they never carry an exception's text (the log has it).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import StoreUnavailable
from ..web.common import json_body, json_error
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

routes = web.RouteTableDef()

FIELDS = ("to", "body", "from", "purpose", "nature", "category", "status_callback")


def bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def unauthorized() -> web.Response:
    return web.json_response(
        {"error": "unauthorized", "detail": "send Authorization: Bearer <stream api_key>"},
        status=401, headers={"WWW-Authenticate": 'Bearer realm="gateway sms"'})


def text_request(body: dict[str, Any]) -> TextRequest:
    """The request's fields, type-checked; `TextRejected` names the first bad one."""
    for key, value in body.items():
        if key not in FIELDS:
            raise TextRejected("invalid_request", key, "unknown field", 21601)
        if value is not None and not isinstance(value, str):
            raise TextRejected("invalid_request", key, "expected a string", 21601)
    return TextRequest(
        to=body.get("to") or "", body=body.get("body") or "", from_=body.get("from"),
        purpose=body.get("purpose"), nature=body.get("nature"),
        category=body.get("category"), status_callback=body.get("status_callback"))


def decision_answer(d) -> dict[str, Any]:
    """A decision as the API shows it: with the rule set, region and its source."""
    return {"allowed": d.allowed, "reason": d.reason, "explanation": d.explanation,
            "outcome": d.outcome, "ruleset": d.ruleset, "region": d.region,
            "region_source": d.region_source}


def sent_answer(sent: SentText) -> dict[str, Any]:
    return {
        "status": "accepted",
        "decision": decision_answer(sent.decision),
        "to": sent.to, "from": sent.from_, "body": sent.body,
        "encoding": sent.segments.encoding, "segments": sent.segments.segments,
        "warnings": list(sent.warnings), "provider": sent.provider,
        "message_id": sent.result.message_id, "provider_status": sent.result.status,
        "gateway_message_id": sent.message_id,
    }


def deferred_answer(exc: TextDeferred) -> dict[str, Any]:
    """Held for the recipient's quiet hours: when it will go (contract, "Rule sets per
    recipient")."""
    return {
        "status": "deferred", "send_at": exc.send_at.isoformat(),
        "decision": decision_answer(exc.decision),
        "to": exc.to, "from": exc.from_, "body": exc.body,
        "gateway_message_id": exc.message_id,
    }


def blocked_answer(exc: TextBlocked) -> web.Response:
    return json_error(403, "blocked", reason=exc.decision.reason,
                      explanation=exc.decision.explanation,
                      gateway_message_id=exc.message_id)


@routes.post("/api/v1/sms")
async def send_sms(request: web.Request) -> web.Response:
    sms = channel(request)
    stream = sms.relay.stream_for_key(bearer(request))
    if stream is None:
        return unauthorized()
    body = await json_body(request)  # 400 for anything but a JSON object
    try:
        sent = await sms.relay.send(stream, text_request(body))
    except TextRejected as exc:
        return json_error(exc.status, exc.error, field=exc.field, detail=exc.detail)
    except TextBlocked as exc:
        return blocked_answer(exc)
    except TextDeferred as exc:
        return web.json_response(deferred_answer(exc), status=202,
                                 dumps=lambda v: json.dumps(v, ensure_ascii=False))
    except ProviderError as exc:
        return json_error(502, "provider_error", provider=exc.provider, code=exc.code,
                          message=provider_problem(exc))
    except StoreUnavailable as exc:
        log_failure("sms_not_sent", exc, stream=stream.id)
        return json_error(503, "store_unavailable", detail=STORE_UNAVAILABLE)
    except Exception as exc:  # noqa: BLE001 - logged; the app retries on 503, not a 500
        log_failure("sms_not_sent", exc, stream=stream.id)
        return json_error(503, "internal_error", detail=INTERNAL_ERROR)
    return web.json_response(sent_answer(sent), status=202,
                             dumps=lambda v: json.dumps(v, ensure_ascii=False))
