"""Shared pieces of the HTTP handlers: the runtime key, auth, JSON errors, pages."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from typing import Any

from aiohttp import web

from ..runtime import Runtime
from ..templating import render

RUNTIME = web.AppKey("runtime", Runtime)


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


def require_admin(request: web.Request) -> None:
    """401 unless the admin bearer token is given."""
    if not bearer_ok(request, runtime(request).settings.http.admin_token):
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "unauthorized",
                             "detail": "send Authorization: Bearer <admin_token>"}),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="gateway"'},
        )


def require_status_login(request: web.Request) -> None:
    """Basic auth for operator pages: any user name, password = admin_token."""
    creds = basic_credentials(request)
    if creds is None or not _same(creds[1], runtime(request).settings.http.admin_token):
        raise web.HTTPUnauthorized(
            text="Log in with the admin token as password.",
            headers={"WWW-Authenticate": 'Basic realm="consent gateway", charset="UTF-8"'},
        )


def _bad_json(detail: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": "bad_json", "detail": detail}),
                              content_type="application/json")


async def json_body(request: web.Request) -> dict:
    """The request's JSON object; 400 for anything else (malformed, too deep, a number
    too long, an unknown charset, not an object)."""
    raw = await request.read()
    try:
        text = raw.decode(request.charset or "utf-8")
        body = json.loads(text)
    except (ValueError, RecursionError, LookupError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors.
        raise _bad_json(f"malformed JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise _bad_json("expected a JSON object")
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
