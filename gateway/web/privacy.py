"""The admin API's erasure endpoint (docs/privacy.md): `POST /api/v1/erasures`."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..errors import StoreUnavailable, ValidationError
from ..privacy.erasure import Erasures, parse_erasure
from .common import json_body, json_error, require_admin, runtime, store_unavailable

routes = web.RouteTableDef()


def erasures_of(rt) -> Erasures:
    """Erasure in a running gateway: its ledger, and this process's spool."""
    return Erasures(rt.ledger, rt.consent, lambda: [rt.spool] if rt.spool is not None else [],
                    lambda: rt.deferred, lambda: rt.optouts.pending)


@routes.post("/api/v1/erasures")
async def post_erasure(request: web.Request) -> web.Response:
    """Erase one person for one org or all (admin token); 200 with the counts."""
    require_admin(request)
    body = await json_body(request)
    rt = runtime(request)
    try:
        wanted = parse_erasure(body, {o.id: o.default_region for o in rt.settings.orgs.values()})
    except ValidationError as exc:
        return json_error(422, "invalid", fields=exc.fields)
    try:
        answer = await asyncio.to_thread(erasures_of(rt).erase, wanted)
    except StoreUnavailable as exc:
        return store_unavailable(request, exc)
    return web.json_response(answer, status=201 if answer["new"] else 200)
