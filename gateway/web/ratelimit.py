"""Per-client limits on the HTTP side (the counting is `gateway.anvil`'s).

Bad unsubscribe links (`/u/TOKEN`, `/s/TOKEN`): tokens are signed (a guess fails its
MAC before any lookup), so brute force cannot succeed; the limit keeps a guesser from
burning CPU and filling logs. Only bad links count: a client that got
`BAD_LINKS_PER_WINDOW` 404s within `WINDOW_SECONDS` gets 429 (with Retry-After) for
further bad links until the window has passed. A link whose signature is valid always
goes through, even from a limited address: behind a reverse proxy every client shares
one address, and a guesser must never be able to stop people from unsubscribing.

Bad admin credentials (`/api/v1` bearer token, `/status` passwords): each failure is
answered later than the one before, and a client refused for failing too often gets
429 (see `common.require_admin` and `gateway.anvil`).

State is in memory, per process, bounded in size."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ..anvil import Anvil
from ..errors import TokenError
from ..logs import event
from ..tokens import CONFIRM, UNSUBSCRIBE, token_id_of
from .common import ADMIN_LOGINS, AdminLoginFailed, page, runtime

log = logging.getLogger("gateway.web.ratelimit")

LIMITED_PREFIXES = ("/u/", "/s/", "/c/")  # /c/: double opt-in confirmation links
WINDOW_SECONDS = 60.0
BAD_LINKS_PER_WINDOW = 20

LIMITER = web.AppKey("bad_link_limiter", Anvil)


@web.middleware
async def limit_bad_links(request: web.Request, handler):
    """429 for a client that sent too many bad unsubscribe links lately."""
    if not request.path.startswith(LIMITED_PREFIXES):
        return await handler(request)
    limiter = request.app[LIMITER]
    client = request.remote or "?"
    wait = limiter.retry_after(client)
    if wait is not None and not well_signed(request):
        response = page("try_again.html.j2", status=429)
        response.headers["Retry-After"] = str(int(wait + 0.999))
        return response
    response = await handler(request)
    if response.status == 404:
        limiter.fail(client)
        if limiter.retry_after(client) is not None:
            event(log, "bad_links_limited", logging.WARNING, client=client,
                  limit=limiter.limit, window=limiter.window)
    return response


def well_signed(request: web.Request) -> bool:
    """The link's token carries a valid signature (checked without the database)."""
    token = request.path.split("/", 3)[2] if request.path.count("/") == 2 else ""
    try:
        token_id_of(token, runtime(request).settings.unsubscribe.secrets,
                    CONFIRM if request.path.startswith("/c/") else UNSUBSCRIBE)
    except TokenError:
        return False
    return True


@web.middleware
async def slow_failed_admin_logins(request: web.Request, handler):
    """Hold the answer to a wrong admin credential for the client's throttle delay."""
    try:
        return await handler(request)
    except AdminLoginFailed as failed:
        if failed.delay:
            await asyncio.sleep(failed.delay)
        raise


def install(app: web.Application) -> None:
    """Add the limits to an app that is not yet started."""
    app[LIMITER] = Anvil(limit=BAD_LINKS_PER_WINDOW, window=WINDOW_SECONDS, first_delay=0)
    app[ADMIN_LOGINS] = Anvil()
    app.middlewares.append(limit_bad_links)
    app.middlewares.append(slow_failed_admin_logins)
