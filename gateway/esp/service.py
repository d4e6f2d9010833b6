"""Adds the ESP webhooks (hooks.py) to the gateway's HTTP app; nothing runs in the
background. Each configured `[esp.NAME]` also gets its header on every marketing copy
(gateway/mail/esp_headers.py), so its events name the copy's token."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..logs import event
from ..runtime import Runtime
from . import hooks

log = logging.getLogger("gateway.esp")


async def start(rt: Runtime, app: web.Application) -> Callable[[], Awaitable[None]]:
    app.add_routes(hooks.routes)
    if rt.settings.esp:
        event(log, "esp_hooks_ready", providers=",".join(sorted(rt.settings.esp)))

    async def stop() -> None:
        return None

    return stop
