"""Posting forms on to apps (inbound replies, delivery statuses) in the background.

A webhook answers the provider at once; the forward runs as a background task, so a slow
or dead app never delays the provider (which would retry, and send the reply twice).
Each forward is tried `attempts` times, waiting ``backoff * 2**n`` seconds between
tries; a 2xx answer ends it, anything else (connection error, timeout, any other status)
is tried again. When every try fails it is logged and noted as ``sms_forward`` on
/status: by then any opt-out in the text was recorded already, so nothing of consequence
is lost. Forwards kept in memory only: a gateway stopped mid-retry drops them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import aiohttp

from ..logs import event
from ..runtime import Runtime
from .signatures import twilio_signature

log = logging.getLogger("gateway.sms.forward")

Form = list[tuple[str, str]]


class BackgroundTasks:
    """Tasks the SMS channel started; `close` lets them finish (or cancels them)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def close(self, timeout: float = 5.0) -> None:
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
            event(log, "sms_background_cancelled", level=logging.WARNING, count=len(late))


class Forwarder:
    """Posts forms to apps' URLs with retries, optionally signed the way Twilio signs."""

    def __init__(self, rt: Runtime, session: aiohttp.ClientSession, tasks: BackgroundTasks,
                 attempts: int = 3, backoff: float = 0.5, timeout: float = 10.0):
        self.rt = rt
        self.session = session
        self.tasks = tasks
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    def submit(self, kind: str, url: str, form: Form, *, twilio_token: str | None = None,
               headers: dict[str, str] | None = None) -> asyncio.Task:
        """Forward `form` to `url` in the background. With `twilio_token`, the request
        carries ``X-Twilio-Signature`` over `url` and `form`, computed with it."""
        extra = dict(headers or {})
        if twilio_token:
            extra["X-Twilio-Signature"] = twilio_signature(url, form, twilio_token)
        return self.tasks.spawn(self.forward(kind, url, form, extra))

    async def forward(self, kind: str, url: str, form: Form, headers: dict[str, str]) -> bool:
        """Try up to `attempts` times; True once the app answered 2xx."""
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                async with self.session.post(url, data=form, headers=headers,
                                             timeout=self.timeout) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        event(log, "sms_forwarded", kind=kind, status=response.status,
                              attempts=attempt)
                        self.rt.note("sms_forward", True)
                        return True
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            if attempt < self.attempts:
                event(log, "sms_forward_retry", kind=kind, attempt=attempt, problem=problem)
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        event(log, "sms_forward_failed", level=logging.WARNING, kind=kind,
              attempts=self.attempts, problem=problem)
        self.rt.note("sms_forward", False,
                     f"{kind} forward failed after {self.attempts} attempts: {problem}")
        return False
