"""Failed logins per client address: slowed, then refused (after Postfix's `anvil`).

Used for failed SMTP AUTH (`mail.session`), for bad admin credentials on `/api/v1`,
`/status`, `/status.json` and `/metrics` (`web.common`), and, without the slowing, for
bad unsubscribe links (`web.ratelimit`). The key is the client's IP address as the
socket gives it, loopback included.

- A client with no failure in the last `window` seconds is never slowed nor refused,
  whatever other clients do: only its own failures count against it.
- Each failure slows the client's next attempt (SMTP) or its failed answer (HTTP):
  `first_delay` after one failure, doubling with each further one, at most `max_delay`.
- After `limit` failures within `window` seconds the client is refused, whatever it
  sends, the right password included (else a guesser would learn from the refusals which
  guess was right), until the oldest of those failures is `window` seconds old. Refused
  attempts are not checked, so they do not count as failures.
- A success forgets nothing: a client that knows one password (a stream's) cannot reset
  its count while it guesses another (the admin token).

State is in memory, per process (each worker of `[gateway] processes` counts on its own)
and bounded: at most `max_clients` addresses, the least recently failed forgotten first,
and addresses whose failures have all expired are dropped as new failures come in."""

from __future__ import annotations

import time
from collections import OrderedDict

FAILURES_PER_WINDOW = 10
WINDOW_SECONDS = 600.0
FIRST_DELAY = 0.1  # seconds
MAX_DELAY = 2.0
MAX_CLIENTS = 10_000


class Anvil:
    """Recent failure times per client address, in a sliding window."""

    def __init__(self, limit: int = FAILURES_PER_WINDOW, window: float = WINDOW_SECONDS,
                 first_delay: float = FIRST_DELAY, max_delay: float = MAX_DELAY,
                 max_clients: int = MAX_CLIENTS):
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self.first_delay, self.max_delay = first_delay, max_delay
        # client -> its failure times (oldest first, at most `limit`); the least recently
        # failed client first.
        self._failed: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failed)

    def _recent(self, client: str, now: float) -> list[float]:
        """The client's failures within the window (forgetting the client if none)."""
        times = self._failed.get(client)
        if times is None:
            return []
        cutoff = now - self.window
        if times[0] <= cutoff:
            times[:] = [t for t in times if t > cutoff]
            if not times:
                del self._failed[client]
        return times

    def failures(self, client: str, now: float | None = None) -> int:
        """How many failures of `client` count now (at most `limit`)."""
        return len(self._recent(client, time.monotonic() if now is None else now))

    def fail(self, client: str, now: float | None = None) -> int:
        """Count a failure of `client`; answer how many count now."""
        now = time.monotonic() if now is None else now
        times = self._recent(client, now)
        if not times:
            times = self._failed[client] = []
        self._failed.move_to_end(client)
        times.append(now)
        del times[:-self.limit]
        self._forget_old(now)
        return len(times)

    def _forget_old(self, now: float) -> None:
        """Drop the least recently failed clients: those beyond `max_clients`, and those
        whose latest failure has left the window."""
        while len(self._failed) > self.max_clients:
            self._failed.popitem(last=False)
        cutoff = now - self.window
        while self._failed:
            client, times = next(iter(self._failed.items()))
            if times[-1] > cutoff:
                break
            del self._failed[client]

    def delay(self, client: str, now: float | None = None) -> float:
        """Seconds to hold `client` back: 0 without failures, then growing."""
        count = self.failures(client, now)
        if not count or not self.first_delay:
            return 0.0
        return min(self.max_delay, self.first_delay * 2 ** (count - 1))

    def retry_after(self, client: str, now: float | None = None) -> float | None:
        """Seconds until `client` may try again; None when it is not refused."""
        now = time.monotonic() if now is None else now
        times = self._recent(client, now)
        if len(times) < self.limit:
            return None
        return max(1.0, times[-self.limit] + self.window - now)
