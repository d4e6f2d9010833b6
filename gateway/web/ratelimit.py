"""A small per-client limit on bad unsubscribe links (`/u/TOKEN`, `/s/TOKEN`).

Tokens are signed (a guess fails its MAC before any lookup), so brute force cannot
succeed; the limit keeps a guesser from burning CPU and filling logs. Only bad links
count: a client that got `BAD_LINKS_PER_WINDOW` 404s within `WINDOW_SECONDS` gets 429
(with Retry-After) for further bad links until the window has passed. A link whose
signature is valid always goes through, even from a limited address: behind a reverse
proxy every client shares one address, and a guesser must never be able to stop people
from unsubscribing. State is in memory, per process, bounded in size."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque

from aiohttp import web

from ..errors import TokenError
from ..logs import event
from ..tokens import token_id_of
from .common import page, runtime

log = logging.getLogger("gateway.web.ratelimit")

LIMITED_PREFIXES = ("/u/", "/s/")
WINDOW_SECONDS = 60.0
BAD_LINKS_PER_WINDOW = 20
MAX_CLIENTS = 10_000  # oldest clients are forgotten beyond this


class BadLinkLimiter:
    """Bad-link times per client address, in a sliding window."""

    def __init__(self, limit: int = BAD_LINKS_PER_WINDOW, window: float = WINDOW_SECONDS,
                 max_clients: int = MAX_CLIENTS):
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._bad: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._bad.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._bad[client]
            return None
        return times

    def retry_after(self, client: str, now: float | None = None) -> float | None:
        """Seconds until `client` may try again; None when it is not limited."""
        now = time.monotonic() if now is None else now
        times = self._recent(client, now)
        if times is None or len(times) < self.limit:
            return None
        return max(1.0, times[-self.limit] + self.window - now)

    def note_bad(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        times = self._recent(client, now)
        if times is None:
            times = self._bad[client] = deque(maxlen=self.limit)
            while len(self._bad) > self.max_clients:
                self._bad.popitem(last=False)
        self._bad.move_to_end(client)
        times.append(now)


LIMITER = web.AppKey("bad_link_limiter", BadLinkLimiter)


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
        limiter.note_bad(client)
        if limiter.retry_after(client) is not None:
            event(log, "bad_links_limited", logging.WARNING, client=client,
                  limit=limiter.limit, window=limiter.window)
    return response


def well_signed(request: web.Request) -> bool:
    """The link's token carries a valid signature (checked without the database)."""
    token = request.path.split("/", 3)[2] if request.path.count("/") == 2 else ""
    try:
        token_id_of(token, runtime(request).settings.unsubscribe.secrets)
    except TokenError:
        return False
    return True


def install(app: web.Application) -> None:
    """Add the limit to an app that is not yet started."""
    app[LIMITER] = BadLinkLimiter()
    app.middlewares.append(limit_bad_links)
