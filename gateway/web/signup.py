"""The double opt-in over HTTP: `POST /api/v1/subscriptions` (the org's sign-up form posts
here from its server, admin token) and the confirmation page `/c/TOKEN` (a GET only
shows; the button's POST confirms). See gateway/subscriptions.py."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ..addresses import mask
from ..errors import GatewayError, StoreUnavailable, ValidationError
from ..logs import event
from ..subscriptions import category_label, parse_signup
from .admin import regions
from .common import json_body, json_error, page, require_admin, runtime, store_unavailable

log = logging.getLogger("gateway.web.signup")

routes = web.RouteTableDef()


@routes.post("/api/v1/subscriptions")
async def post_subscription(request: web.Request) -> web.Response:
    """A pending consent and (unless throttled) one confirmation message: 202."""
    require_admin(request)
    body = await json_body(request)
    try:
        signup = parse_signup(body, regions(request))
    except ValidationError as exc:
        return json_error(422, "invalid", fields=exc.fields)
    rt = runtime(request)
    send = rt.confirmation_senders.get(signup.channel)
    if send is None:
        return json_error(503, "channel_unavailable",
                          detail=f"this gateway cannot send {signup.channel} confirmations")
    subs = rt.subscriptions
    try:
        done = await asyncio.to_thread(subs.request, signup, request.remote)
        if done.token is not None:
            row = await asyncio.to_thread(rt.ledger.subscription, done.id)
            try:
                message_id = await send(row, subs.link(done.token))
            except BaseException:
                await asyncio.to_thread(subs.not_sent, done.id)  # a retry may send it
                raise
            await asyncio.to_thread(subs.sent, done.id, done.sent_at, message_id)
    except StoreUnavailable as exc:
        return store_unavailable(request, exc)
    except ValidationError as exc:  # e.g. no number to send the text from
        return json_error(422, "invalid", fields=exc.fields)
    except GatewayError as exc:  # the provider did not take the text
        event(log, "confirmation_not_sent", logging.WARNING, org=signup.org,
              channel=signup.channel, error=type(exc).__name__)
        return json_error(503, "confirmation_not_sent", detail=(
            "the confirmation message could not be sent just now; try again later"))
    event(log, "subscription_requested", org=signup.org, channel=signup.channel,
          address=mask(signup.address), sent=done.token is not None,
          throttled=done.throttled or "")
    return web.json_response({"id": done.id, "status": "pending", "address": signup.address,
                              "confirmation_sent": done.token is not None,
                              "throttled": done.throttled}, status=202)


def invalid_link() -> web.Response:
    return page("invalid_link.html.j2", status=404, link_kind="confirm")


def confirm_context(request: web.Request, row: dict, **extra) -> dict:
    rt = runtime(request)
    org = rt.settings.orgs.get(row["org"])
    return {"org_name": org.name if org else row["org"], "masked_address": mask(row["address"]),
            "channel": row["channel"], "wording": row["wording"],
            "categories": category_label(rt.settings, row["org"], row["categories"]), **extra}


@routes.get("/c/{token}")
async def show_confirmation(request: web.Request) -> web.Response:
    """What the person is confirming, and the button. Changes nothing: scanners open links."""
    rt = runtime(request)
    row = await asyncio.to_thread(rt.subscriptions.pending, request.match_info["token"])
    if row is None:
        return invalid_link()
    return page("confirm.html.j2", **confirm_context(request, row))


@routes.post("/c/{token}")
async def confirm(request: web.Request) -> web.Response:
    """Record the consent, confirmed now, with the client's IP and user agent."""
    rt = runtime(request)
    subs = rt.subscriptions
    row = await asyncio.to_thread(subs.pending, request.match_info["token"])
    if row is None:
        return invalid_link()
    try:
        evidence_id = await asyncio.to_thread(
            subs.confirm, row, ip=request.remote,
            user_agent=request.headers.get("User-Agent"), via="link")
    except StoreUnavailable as exc:
        event(log, "confirmation_not_recorded", org=row["org"], error=str(exc))
        return page("try_again.html.j2", status=503)
    if evidence_id is None:  # confirmed by another request meanwhile, or just expired
        return invalid_link()
    event(log, "subscription_confirmed", org=row["org"], channel=row["channel"], via="link",
          address=mask(row["address"]), evidence_id=evidence_id)
    return page("confirmed.html.j2", **confirm_context(request, row))
