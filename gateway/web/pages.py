"""Pages for people: the unsubscribe pages behind every link (`/u/TOKEN` for email,
`/s/TOKEN` for texts), plus the operator pages of `status.py`.

A GET only shows; a POST records the opt-out, once per token. A bad token of any kind
(malformed, forged, altered, signed with a retired secret, unknown) gets one and the
same 404 page, so a link reveals nothing about why it failed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..addresses import mask
from ..errors import StoreUnavailable, TokenError
from ..ledger import TokenRecord
from ..logs import event
from ..policy import ALL_CHANNELS
from ..runtime import Runtime
from . import status
from .common import page, runtime
from .preferences import CATEGORY_SCOPE, leave_category, preference_choices

log = logging.getLogger("gateway.web.pages")

routes = web.RouteTableDef()

ONE_CLICK_FIELD = "List-Unsubscribe"  # RFC 8058: body "List-Unsubscribe=One-Click"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def start(rt: Runtime, app: web.Application) -> Callable[[], Awaitable[None]]:
    """Add the unsubscribe and status routes; nothing runs in the background."""
    app.add_routes(routes)
    app.add_routes(status.routes)

    async def stop() -> None:
        return None

    return stop


def invalid_link() -> web.Response:
    return page("invalid_link.html.j2", status=404)


def org_name(rt: Runtime, record: TokenRecord) -> str:
    org = rt.settings.orgs.get(record.org)
    return org.name if org else record.org


def already_unsubscribed(rt: Runtime, record: TokenRecord) -> dict | None:
    """The opt-out this token already recorded, if it is still in force."""
    existing = rt.ledger.opt_out_for_token(record.id)
    if existing is None or not rt.consent.still_opted_out(record):
        return None
    return existing


async def resolve(rt: Runtime, request: web.Request) -> TokenRecord | None:
    """The record of a valid, known token (its `id` is the token id); None for any kind
    of bad token. While the ledger is away, a correctly signed token's unresolved record
    (no org or address: the pages then name neither)."""
    channel = "sms" if request.path.startswith("/s/") else "email"
    try:
        return await asyncio.to_thread(rt.tokens.resolve_or_unresolved,
                                       request.match_info["token"], channel)
    except TokenError:
        return None


def context(rt: Runtime, record: TokenRecord, **extra) -> dict:
    if not record.org:  # unresolved while the ledger is away: the templates say less
        return {"org_name": "", "masked_address": "", "channel": record.channel, **extra}
    return {"org_name": org_name(rt, record), "masked_address": mask(record.address),
            "channel": record.channel, **extra}


def confirmation(rt: Runtime, record: TokenRecord, scope: str, already: bool) -> web.Response:
    """The page after an opt-out: what stopped, for whom; nothing else (nothing promotional)."""
    return page("unsubscribed.html.j2", **context(rt, record, already=already, scope=scope))


async def form_fields(request: web.Request) -> dict[str, str]:
    """The POST body's fields: form encodings via request.post(); a body without a form
    content type (some one-click senders omit it) is read as urlencoded text."""
    if request.content_type in FORM_TYPES:
        try:
            form = await request.post()
        except (ValueError, HttpProcessingError):
            return {}  # a broken body is still a POST to the link: the person's request
        return {k: v for k, v in form.items() if isinstance(v, str)}
    if not request.can_read_body:
        return {}
    text = (await request.read()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(text.strip()).items()}


@routes.get("/u/{token}")
@routes.get("/s/{token}")
async def show_unsubscribe(request: web.Request) -> web.Response:
    """The confirmation form. Changes nothing: link scanners open links."""
    rt = runtime(request)
    record = await resolve(rt, request)
    if record is None:
        return invalid_link()
    existing = await asyncio.to_thread(already_unsubscribed, rt, record) if record.org \
        else None
    if existing is not None:
        return confirmation(rt, record, existing["channel"], already=True)
    groups = await asyncio.to_thread(preference_choices, rt, record)  # preference centre
    return page("unsubscribe.html.j2", **context(rt, record, groups=groups))


@routes.post("/u/{token}")
@routes.post("/s/{token}")
async def unsubscribe(request: web.Request) -> web.Response:
    """Record the opt-out (once per token) and confirm it; 200, never a redirect."""
    rt = runtime(request)
    record = await resolve(rt, request)
    if record is None:
        return invalid_link()
    fields = await form_fields(request)
    one_click = fields.get(ONE_CLICK_FIELD, "").strip().lower() == "one-click"
    method = "one-click" if one_click else "link"
    scope = fields.get("scope", "")
    if not one_click and scope.startswith(CATEGORY_SCOPE):  # the preference centre
        return await leave_category(rt, request, record, scope[len(CATEGORY_SCOPE):])
    channel = ALL_CHANNELS if fields.get("scope") == "all" else record.channel
    try:
        done = await asyncio.to_thread(rt.optouts.by_token, record, method=method,
                                       client=request.remote, channel=channel)
    except StoreUnavailable as exc:  # neither the ledger nor data_dir could keep it
        event(log, "opt_out_not_recorded", org=record.org, channel=channel, method=method,
              error=str(exc))
        return page("try_again.html.j2", status=503)
    if not done.new:
        return confirmation(rt, record, (done.existing or {}).get("channel", channel),
                            already=True)
    return confirmation(rt, record, channel, already=False)
