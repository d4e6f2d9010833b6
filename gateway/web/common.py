"""Shared pieces of the HTTP handlers: the runtime key, auth, JSON errors, pages."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import math
import traceback
from typing import Any

from aiohttp import web

from ..anvil import Anvil
from ..errors import StoreUnavailable
from ..logs import event
from ..runtime import Runtime
from ..templating import render

log = logging.getLogger("gateway.web")

RUNTIME = web.AppKey("runtime", Runtime)
# Failed admin logins per client (/api/v1 bearer, /status passwords: the same secret).
ADMIN_LOGINS = web.AppKey("admin_logins", Anvil)
STORE_UNAVAILABLE = ("the gateway cannot use its store just now (the operator's log says "
                     "why); try again in a minute")


def runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def json_error(status: int, error: str, **detail: Any) -> web.Response:
    return web.json_response({"error": error, **detail}, status=status)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def bearer_ok(request: web.Request, token: str) -> bool:
    """Constant-time check of `Authorization: Bearer <token>`."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and _same(given.strip(), token)


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


class AdminLoginFailed(web.HTTPUnauthorized):
    """A wrong or missing admin credential; answered after `delay` seconds (the client's
    throttle delay, applied by `web.ratelimit`)."""

    delay = 0.0


def _admin_login(request: web.Request, *, basic: bool) -> None:
    """Pass if the request carries the admin token: as a bearer token, or (`basic`) as
    a basic-auth password. Else 401; 429 while the client is refused for failing too
    often (see `gateway.anvil`). Only a credential sent and wrong counts as a failure: a
    browser asks without one first."""
    logins = request.app.get(ADMIN_LOGINS)
    client = request.remote or "?"
    wait = logins.retry_after(client) if logins is not None else None
    if wait is not None:
        raise _too_many_failures(wait, as_json=not basic)
    token = runtime(request).settings.http.admin_token
    if bearer_ok(request, token):
        return
    creds = basic_credentials(request) if basic else None
    if creds is not None and _same(creds[1], token):
        return
    if basic:
        failed = AdminLoginFailed(
            text="Log in with the admin token as password.",
            headers={"WWW-Authenticate": 'Basic realm="consent gateway", charset="UTF-8"'})
    else:
        failed = AdminLoginFailed(
            text=json.dumps({"error": "unauthorized",
                             "detail": "send Authorization: Bearer <admin_token>"}),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="gateway"'})
    if logins is not None and "Authorization" in request.headers:
        if logins.fail(client) == logins.limit:
            event(log, "admin_logins_refused", logging.WARNING, client=client,
                  failures=logins.limit, window=logins.window)
        failed.delay = logins.delay(client)
    raise failed


def _too_many_failures(wait: float, *, as_json: bool) -> web.HTTPTooManyRequests:
    seconds = math.ceil(wait)
    detail = (f"too many wrong credentials from your address; try again in {seconds} "
              "seconds with the right one")
    if as_json:
        return web.HTTPTooManyRequests(
            text=json.dumps({"error": "too_many_failures", "detail": detail}),
            content_type="application/json", headers={"Retry-After": str(seconds)})
    return web.HTTPTooManyRequests(text=detail[0].upper() + detail[1:] + ".",
                                   headers={"Retry-After": str(seconds)})


def require_admin(request: web.Request) -> None:
    """401 unless the admin bearer token is given (429 for a client refused for now)."""
    _admin_login(request, basic=False)


def require_status_login(request: web.Request) -> None:
    """Operator pages: the admin token as basic-auth password (any user name; browsers)
    or as bearer token (scripts, Prometheus). 401 otherwise, 429 as `require_admin`."""
    _admin_login(request, basic=True)


def store_unavailable(request: web.Request, exc: StoreUnavailable) -> web.Response:
    """503 for StoreUnavailable: what happened and what to do, never the exception's
    text (that goes to the log)."""
    event(log, "store_unavailable", logging.ERROR, path=request.path, error=repr(exc)[:300])
    return json_error(503, "store_unavailable", detail=STORE_UNAVAILABLE)


@web.middleware
async def answer_internal_errors(request: web.Request, handler):
    """A handler's unexpected exception answers 503 (retry later) with no internal
    detail; the operator's log gets the error and where it was raised."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except StoreUnavailable as exc:
        return store_unavailable(request, exc)
    except Exception as exc:  # noqa: BLE001 - answered 503 and logged, never swallowed
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        event(log, "http_internal_error", logging.ERROR, path=request.path,
              error=repr(exc)[:300], where=f"{frame.filename}:{frame.lineno}")
        if "text/html" in request.headers.get("Accept", ""):  # a person, in a browser
            return page("try_again.html.j2", status=503)
        return json_error(503, "internal_error", detail=(
            "the gateway hit an internal error (the operator's log says where); try "
            "again later"))


def _bad_json(detail: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": "bad_json", "detail": detail}),
                              content_type="application/json")


SEND_A_JSON_OBJECT = "send one JSON object (Content-Type: application/json)"


async def json_body(request: web.Request) -> dict:
    """The request's JSON object; 400 for anything else (malformed, too deep, a number
    too long, an unknown charset, not an object), saying what was wrong in the terms of
    the request, never the parser's own words."""
    raw = await request.read()
    charset = request.charset or "utf-8"
    try:
        text = raw.decode(charset)
    except LookupError:
        raise _bad_json(f"unknown charset {charset[:40]!r}; {SEND_A_JSON_OBJECT} in "
                        "UTF-8") from None
    except UnicodeDecodeError as exc:
        raise _bad_json(f"byte {exc.start} of the body is not {charset[:40]}; "
                        f"{SEND_A_JSON_OBJECT}") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad_json(f"not JSON (line {exc.lineno}, column {exc.colno}); "
                        f"{SEND_A_JSON_OBJECT}") from None
    except RecursionError:
        raise _bad_json(f"JSON nested too deeply; {SEND_A_JSON_OBJECT}") from None
    except ValueError:  # an integer with more digits than Python converts
        raise _bad_json(f"a number with too many digits; {SEND_A_JSON_OBJECT}") from None
    if not isinstance(body, dict):
        raise _bad_json(f"not a JSON object; {SEND_A_JSON_OBJECT}")
    return body


def page(name: str, status: int = 200, **context: Any) -> web.Response:
    """A rendered HTML template (autoescaped) with safe default headers."""
    resp = web.Response(text=render(name, **context), status=status,
                        content_type="text/html", charset="utf-8")
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Cache-Control"] = "no-store"
    return resp
