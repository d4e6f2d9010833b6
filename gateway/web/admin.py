"""The admin API: evidence in, opt-outs in, a person's record out (bearer-token auth)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..addresses import normalise
from ..errors import InvalidAddress, StoreUnavailable, ValidationError
from ..evidence import parse_evidence
from ..ledger.export import trail_csv
from ..optouts import OptOutRequest
from ..policy import ALL_CHANNELS, ALL_ORGS, CHANNELS
from .common import json_body, json_error, require_admin, runtime, store_unavailable

routes = web.RouteTableDef()


def regions(request: web.Request) -> dict[str, str]:
    return {o.id: o.default_region for o in runtime(request).settings.orgs.values()}


@routes.post("/api/v1/consents")
async def post_consent(request: web.Request) -> web.Response:
    require_admin(request)
    body = await json_body(request)
    try:
        record = parse_evidence(body, regions(request))
    except ValidationError as exc:
        return json_error(422, "invalid", fields=exc.fields)
    rt = runtime(request)
    try:
        record_id = await asyncio.to_thread(rt.ledger.record_evidence, record, "api")
    except StoreUnavailable as exc:
        return store_unavailable(request, exc)
    return web.json_response({"id": record_id, "address": record.address}, status=201)


@routes.post("/api/v1/optouts")
async def post_optout(request: web.Request) -> web.Response:
    require_admin(request)
    body = await json_body(request)
    orgs = regions(request)
    errors: dict[str, str] = {}
    for key in body:
        if key not in ("org", "channel", "address", "source"):
            errors[key] = "unknown field"
    org, channel = body.get("org"), body.get("channel")
    if not isinstance(org, str) or not org:
        errors["org"] = "required: an org id (or \"*\")"
        org = ""
    elif org != ALL_ORGS and org not in orgs:
        errors["org"] = f"unknown org {org!r}"
    if channel not in (*CHANNELS, ALL_CHANNELS):
        errors["channel"] = "one of email, sms, all"
    source = body.get("source", "")
    if not isinstance(source, str):
        errors["source"] = "expected a string"
    address = body.get("address")
    normalised = None
    if not isinstance(address, str) or not address.strip():
        errors["address"] = "required"
    else:
        kind = channel if channel in CHANNELS else ("email" if "@" in address else "sms")
        try:
            normalised = normalise(kind, address, orgs.get(org, "GB"))
        except InvalidAddress as exc:
            errors["address"] = exc.reason
    if errors:
        return json_error(422, "invalid", fields=errors)
    rt = runtime(request)
    try:  # an operator's request: refused (503) rather than kept during an outage
        done = await asyncio.to_thread(
            rt.optouts.record, OptOutRequest(org, channel, normalised, source=source,
                                             method="api", client=request.remote),
            keep_if_unavailable=False)
    except StoreUnavailable as exc:
        return store_unavailable(request, exc)
    return web.json_response({"id": done.id, "address": normalised}, status=201)


@routes.get("/api/v1/contacts/{channel}/{address}")
async def get_contact(request: web.Request) -> web.Response:
    require_admin(request)
    channel = request.match_info["channel"]
    if channel not in CHANNELS:
        return json_error(404, "not_found", detail="channel is email or sms")
    org = request.query.get("org") or None
    orgs = regions(request)
    if org is not None and org not in orgs:
        return json_error(422, "invalid", fields={"org": f"unknown org {org!r}"})
    try:
        address = normalise(channel, request.match_info["address"], orgs.get(org or "", "GB"))
    except InvalidAddress as exc:
        return json_error(422, "invalid", fields={"address": exc.reason})
    rt = runtime(request)
    try:
        trail = await asyncio.to_thread(rt.ledger.trail, address, org)
        # An erased person: when, for which org, on whose word; nothing else of them is left.
        trail["erasures"] = await asyncio.to_thread(
            rt.ledger.erasures_for, rt.consent.suppression.of(channel, address), org)
    except StoreUnavailable as exc:
        return store_unavailable(request, exc)
    trail["channel"] = channel
    trail["consents"] = [e for e in trail.pop("evidence") if e["channel"] == channel]
    trail["decisions"] = [d for d in trail["decisions"] if d["channel"] == channel]
    if request.query.get("format") == "csv":
        return web.Response(text=trail_csv({**trail, "evidence": trail["consents"]}),
                            content_type="text/csv")
    return web.json_response(trail)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    rt = runtime(request)
    checks = {"ledger": await asyncio.to_thread(rt.ledger.healthy)}
    for name, probe in rt.health_probes.items():
        checks[name] = await probe()
    failing = [name for name, good in checks.items() if not good]
    return web.json_response({"status": "unhealthy" if failing else "ok", "checks": checks,
                              "failing": failing}, status=503 if failing else 200)
