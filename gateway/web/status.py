"""Operator pages: `/status` (HTML for people), `/status.json` (the same data) and
`/metrics` (Prometheus text).

Auth, for all three: HTTP basic with any user name and `http.admin_token` as password
(browsers), or `Authorization: Bearer <admin_token>` (scripts, Prometheus scrapers).
Counts come from range queries on the indexed `at` columns; nothing scans the whole log."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
from datetime import UTC, datetime, timedelta

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..addresses import guess_channel, mask, normalise
from ..cluster import cluster_view
from ..errors import InvalidAddress, StoreUnavailable
from ..ledger import now_iso
from ..logs import event, scrub
from ..policy import ALL_CHANNELS, CHANNELS, get_ruleset, reasons
from ..runtime import Runtime
from . import charts
from .common import page, require_status_login, runtime
from .status_outside import outside_opt_outs

log = logging.getLogger("gateway.web.status")

routes = web.RouteTableDef()

OUTCOMES = ("allowed", "blocked", "would_block")
DECISION_WINDOWS = {"last_hour": timedelta(hours=1), "last_24h": timedelta(hours=24)}
OPT_OUT_WINDOWS = {"last_24h": timedelta(hours=24), "last_30d": timedelta(days=30)}
# Opt-out methods in the order people meet them; `sms-keyword` = an SMS STOP-style reply.
METHODS = ("link", "one-click", "mailto", "reply", "sms-keyword", "provider", "api", "cli",
           "preference")
METHOD_LABELS = {"link": "link (unsubscribe page)", "one-click": "one-click (RFC 8058)",
                 "mailto": "mailto", "reply": "reply", "sms-keyword": "SMS keyword (STOP)",
                 "provider": "provider opt-out", "api": "admin API", "cli": "command line",
                 "preference": "preference centre (some categories)"}
# Opt-outs that arrive from elsewhere (status_outside.py): an ESP's own unsubscribe, a
# spam complaint (ESP event or ARF report).
METHODS += ("esp", "complaint")
METHOD_LABELS |= {"esp": "ESP unsubscribe (webhook)", "complaint": "spam complaint"}
OPT_OUT_CHANNELS = (*CHANNELS, ALL_CHANNELS)
# Spool report keys the page lays out itself; any others are listed as they come.
SPOOL_SHOWN = {"running", "depth", "oldest_queued_at", "oldest_age_seconds", "last_24h",
               "delivery_failures_24h", "last_errors"}
RECENT_LIMIT = 50
PERSON_SCAN_LIMIT = 5000  # a person's latest decisions searched for a reason filter
TRAIL_DECISIONS_LIMIT = 200


def since(window: timedelta, now: datetime) -> str:
    return (now - window).isoformat(timespec="microseconds")


def as_time(value) -> datetime | None:
    """A time given as epoch seconds or ISO 8601 text, in UTC; None if neither."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        when = datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError):
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def utc_text(value) -> str:
    """`2025-01-31 09:15:02 UTC` for an ISO or epoch time; anything else as given."""
    when = as_time(value)
    if when is None:
        return "" if value is None else str(value)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


# -- the data (one snapshot serves both the page and the JSON) ----------------------------


def decision_summary(rows: list[dict]) -> dict:
    """Totals by outcome, by reason (split by outcome) and by channel."""
    by_outcome = dict.fromkeys(OUTCOMES, 0)
    by_reason: dict[str, dict[str, int]] = {}
    by_channel: dict[str, dict[str, int]] = {}
    for r in rows:
        n, outcome = r["n"], r["outcome"]
        by_outcome[outcome] = by_outcome.get(outcome, 0) + n
        reason = by_reason.setdefault(r["reason"], {"total": 0})
        reason["total"] += n
        reason[outcome] = reason.get(outcome, 0) + n
        channel = by_channel.setdefault(r["channel"], {})
        channel[outcome] = channel.get(outcome, 0) + n
    return {"total": sum(by_outcome.values()), "by_outcome": by_outcome,
            "by_reason": by_reason, "by_channel": by_channel}


def opt_out_summary(rows: list[dict]) -> dict:
    """Opt-outs by method and channel; active opt-ins (START, re-consent) counted apart."""
    methods = list(METHODS) + sorted({r["method"] or "other" for r in rows} - set(METHODS))
    matrix = {m: dict.fromkeys(OPT_OUT_CHANNELS, 0) for m in methods}
    opt_ins = 0
    for r in rows:
        if r["kind"] != "optout":
            opt_ins += r["n"]
            continue
        row = matrix[r["method"] or "other"]
        row[r["channel"]] = row.get(r["channel"], 0) + r["n"]
    by_method = {m: sum(c.values()) for m, c in matrix.items()}
    by_channel: dict[str, int] = {}
    for counts in matrix.values():
        for channel, n in counts.items():
            by_channel[channel] = by_channel.get(channel, 0) + n
    return {"total": sum(by_method.values()), "by_method": by_method, "by_channel": by_channel,
            "by_method_channel": matrix, "opt_ins": opt_ins}


def hourly(rt: Runtime, now: datetime) -> list[dict]:
    """The last 24 UTC hours, oldest first, with a count per outcome (zeros included)."""
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    counts: dict[str, dict[str, int]] = {}
    for r in rt.ledger.decision_counts_by_hour(first.isoformat(timespec="microseconds")):
        counts.setdefault(r["hour"], {})[r["outcome"]] = r["n"]
    buckets = []
    for i in range(24):
        key = (first + timedelta(hours=i)).strftime("%Y-%m-%dT%H")
        bucket = {"hour": key, **dict.fromkeys(OUTCOMES, 0), **counts.get(key, {})}
        buckets.append(bucket)
    return buckets


def decision_row(d: dict) -> dict:
    return {"at": d["at"], "org": d["org"], "stream": d["stream"], "channel": d["channel"],
            "address": mask(d["address"]), "purpose": d["purpose"],
            "category": d["category"], "outcome": d["outcome"], "reason": d["reason"],
            "message_id": d["message_id"]}


def search_region(rt: Runtime) -> str:
    """The region for national phone numbers typed in the search: the orgs' one, if shared."""
    found = {o.default_region for o in rt.settings.orgs.values()}
    return found.pop() if len(found) == 1 else "GB"


def read_filter(rt: Runtime, query) -> dict:
    """The `?reason=` and `?address=` filter, validated; `error` says what was wrong."""
    reason = query.get("reason", "").strip() or None
    typed = query.get("address", "").strip() or None
    result = {"reason": reason, "address": None, "typed_address": typed, "error": None}
    if reason and reason not in reasons.ALL:
        result["error"] = f"unknown reason code {reason!r}"
    if typed:
        try:
            result["address"] = normalise(guess_channel(typed), typed, search_region(rt))
        except InvalidAddress as exc:
            result["error"] = f"not an email address or phone number: {exc.reason}"
    return result


def recent_decisions(rt: Runtime, wanted: dict) -> list[dict]:
    """The newest decisions matching the filter. For one person the reason is matched
    here, among their own latest decisions: in SQL the planner could walk the (reason, at)
    index through every decision with that reason looking for theirs."""
    if not wanted["address"]:
        return rt.ledger.recent_decisions(RECENT_LIMIT, reason=wanted["reason"])
    rows = rt.ledger.recent_decisions(PERSON_SCAN_LIMIT, address=wanted["address"])
    if wanted["reason"]:
        rows = [d for d in rows if d["reason"] == wanted["reason"]]
    return rows[:RECENT_LIMIT]


def ledger_snapshot(rt: Runtime, wanted: dict) -> dict:
    """Everything /status shows that lives in the ledger (runs in a worker thread)."""
    now = datetime.now(UTC)
    decisions = {name: decision_summary(rt.ledger.decision_counts(since(w, now)))
                 for name, w in DECISION_WINDOWS.items()}
    decisions["by_hour"] = hourly(rt, now)
    opt_outs = {name: opt_out_summary(rt.ledger.opt_out_counts(since(w, now)))
                for name, w in OPT_OUT_WINDOWS.items()}
    recent, trail = [], None
    if not wanted["error"]:
        recent = [decision_row(d) for d in recent_decisions(rt, wanted)]
        if wanted["address"]:
            trail = rt.ledger.trail(wanted["address"])
            trail["decisions"] = trail["decisions"][:TRAIL_DECISIONS_LIMIT]
    return {"decisions": decisions, "opt_outs": opt_outs, "recent_decisions": recent,
            "trail": trail, "gateways": cluster_view(rt.ledger.gateways()),
            "ledger_healthy": rt.ledger.healthy(),
            "outside_opt_outs": outside_opt_outs(rt, now)}


async def provider_states(rt: Runtime) -> dict[str, dict]:
    """What each registered part reports about itself (spool, providers, ...). A plain
    callable runs in a worker thread (it may read a database); an async one on the loop."""
    states: dict[str, dict] = {}
    for name, provider in list(rt.status_providers.items()):
        try:
            value = await asyncio.to_thread(provider)
            if inspect.isawaitable(value):
                value = await value
            states[name] = dict(value)
        # A part's report is its own code; one broken part must not take the page down.
        except Exception as exc:  # noqa: BLE001
            event(log, "status_provider_failed", logging.WARNING, provider=name,
                  error=f"{type(exc).__name__}: {exc}")
            states[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return states


def iso_time(value) -> str | None:
    """ISO 8601 (UTC) of an epoch or ISO time; other values as given."""
    when = as_time(value)
    if when is not None:
        return when.isoformat()
    return None if value is None else str(value)


def spool_view(report: dict | None) -> dict:
    """The spool's own report in the terms of this page: depth, oldest queued (and its
    age), delivery results and failures of the last 24 h, recent errors (masked)."""
    if report is None:
        return {"running": False}
    view = {"running": True, "depth": None, "last_24h": None,
            "delivery_failures_24h": None, "last_errors": [], **report}
    oldest = as_time(report.get("oldest_queued_at"))
    view["oldest_queued_at"] = iso_time(report.get("oldest_queued_at"))
    view["oldest_age_seconds"] = (
        round((datetime.now(UTC) - oldest).total_seconds()) if oldest else None)
    results = report.get("last_24h")
    if isinstance(results, dict):
        view["delivery_failures_24h"] = sum(
            n for result, n in results.items() if result != "delivered")
    errors = report.get("last_errors")
    if isinstance(errors, list):
        view["last_errors"] = [
            {**e, "at": iso_time(e.get("at")),
             "rcpt": mask(str(e["rcpt"])) if e.get("rcpt") else "",
             # an upstream's reply often names the recipient
             "detail": scrub(str(e["detail"])) if e.get("detail") else ""}
            for e in errors if isinstance(e, dict)]
    return view


def age_text(seconds: int | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def health_of(entry: dict) -> str:
    ok, error = entry.get("last_ok") or "", entry.get("last_error") or ""
    if error and error >= ok:
        return "failing"
    return "ok" if ok else "unknown"


async def snapshot(request: web.Request) -> dict:
    """The whole status, as plain data (the JSON answer; the page renders it)."""
    rt = runtime(request)
    wanted = read_filter(rt, request.query)
    stored = await asyncio.to_thread(ledger_snapshot, rt, wanted)
    states = await provider_states(rt)
    ledger_ok = stored.pop("ledger_healthy")
    health = {"ledger": {"status": "ok" if ledger_ok else "failing", "last_ok": None,
                         "last_error": None, "error": "" if ledger_ok else "not writable"}}
    for name, entry in rt.health.items():
        health[name] = {"last_ok": None, "last_error": None, "error": "", **entry,
                        "status": health_of(entry)}
    ruleset = get_ruleset(rt.settings.gateway.ruleset)
    return {
        "generated_at": now_iso(),
        "mode": rt.settings.gateway.mode,
        "ruleset": {"name": ruleset.name, "description": ruleset.description},
        # Orgs that choose a rule set per recipient (docs/rulesets.md): region -> rule set.
        "org_rulesets": {o.id: o.rulesets for o in rt.settings.orgs.values() if o.rulesets},
        **stored,
        "spool": spool_view(states.pop("spool", None)),
        "components": states,
        "health": health,
        "filter": {k: wanted[k] for k in ("reason", "address", "error")},
    }


# -- presentation -------------------------------------------------------------------------


def reason_rows(decisions: dict) -> list[dict]:
    """Every reason code in decision-table order, then any unknown ones seen."""
    hour, day = decisions["last_hour"]["by_reason"], decisions["last_24h"]["by_reason"]
    codes = list(reasons.ALL) + sorted(set(day) - set(reasons.ALL))
    return [{"reason": code, "allowing": code in reasons.ALLOWING,
             "meaning": reasons.MEANING.get(code, ""),
             "last_hour": hour.get(code, {}).get("total", 0),
             "last_24h": day.get(code, {}).get("total", 0),
             "would_block_24h": day.get(code, {}).get("would_block", 0)} for code in codes]


def page_context(data: dict, typed_address: str | None) -> dict:
    decisions = data["decisions"]
    rows = reason_rows(decisions)
    by_hour = [(b["hour"][11:13] + ":00", b) for b in decisions["by_hour"]]
    by_reason = [(r["reason"], r["last_24h"], "allowed" if r["allowing"] else "blocked")
                 for r in rows if r["last_24h"]]
    trail = data["trail"]
    if trail is not None:
        trail = {**trail, "decisions": [{**d, "at": utc_text(d["at"])}
                                        for d in trail["decisions"]]}
    return {
        "data": data,
        "generated": utc_text(data["generated_at"]),
        "reason_rows": rows,
        "reason_codes": reasons.ALL,
        "hour_chart": charts.stacked_columns(by_hour, OUTCOMES),
        "reason_chart": charts.horizontal_bars(by_reason),
        "methods": [(m, METHOD_LABELS.get(m, m)) for m in
                    data["opt_outs"]["last_24h"]["by_method"]],
        "opt_out_channels": OPT_OUT_CHANNELS,
        "recent": [{**d, "at": utc_text(d["at"])} for d in data["recent_decisions"]],
        "trail": trail,
        "typed_address": typed_address or "",
        "utc_text": utc_text,
        "spool": data["spool"],
        "spool_age": age_text(data["spool"].get("oldest_age_seconds")),
        "spool_extra": {k: v for k, v in data["spool"].items() if k not in SPOOL_SHOWN},
    }


LEDGER_AWAY = ("The ledger cannot be reached just now, so decisions, opt-outs and the other "
               "gateways cannot be shown; until it is back this gateway answers SMTP 451 and "
               "its APIs 503, and keeps people's opt-outs in its data_dir")


async def without_ledger(request: web.Request, exc: StoreUnavailable) -> dict:
    """What the status can still say while the ledger cannot be read: that it cannot, and
    this gateway's own parts (its spool among them)."""
    rt = runtime(request)
    event(log, "status_without_ledger", logging.WARNING, error=repr(exc)[:300])
    states = await provider_states(rt)
    return {"generated_at": now_iso(), "mode": rt.settings.gateway.mode,
            "error": "ledger_unavailable", "detail": LEDGER_AWAY, "failing": ["ledger"],
            "spool": spool_view(states.pop("spool", None)), "components": states}


@routes.get("/status")
async def status_page(request: web.Request) -> web.Response:
    require_status_login(request)
    try:
        data = await snapshot(request)
    except StoreUnavailable as exc:
        away = await without_ledger(request, exc)
        return page("status_unavailable.html.j2", status=503, data=away,
                    spool_age=age_text(away["spool"].get("oldest_age_seconds")))
    return page("status.html.j2", **page_context(data, request.query.get("address")))


@routes.get("/status.json")
async def status_json(request: web.Request) -> web.Response:
    require_status_login(request)
    try:
        data = await snapshot(request)
    except StoreUnavailable as exc:
        return web.json_response(await without_ledger(request, exc), status=503,
                                 dumps=functools.partial(json.dumps, default=str))
    # Providers may report datetimes or paths; show them as text rather than fail.
    return web.json_response(data, dumps=functools.partial(json.dumps, default=str))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    require_status_login(request)
    body = await asyncio.to_thread(runtime(request).metrics.exposition)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp
