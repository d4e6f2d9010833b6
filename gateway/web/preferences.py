"""The preference centre's part of `/u/TOKEN` (pages.py): the category choices the page
lists, and the POST that leaves one (`scope=category:KEY`). See gateway/preferences.py."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ..addresses import mask
from ..errors import StoreUnavailable
from ..ledger import TokenRecord
from ..logs import event
from ..preferences import METHOD, choices, group_named, has_left
from ..runtime import Runtime
from .common import page

log = logging.getLogger("gateway.web.preferences")

CATEGORY_SCOPE = "category:"


def preference_choices(rt: Runtime, record: TokenRecord) -> list[dict]:
    """The groups to list (none while the token is unresolved: the ledger is away)."""
    return choices(rt.settings, rt.consent, record) if record.org else []


async def leave_category(rt: Runtime, request: web.Request, record: TokenRecord,
                         value: str) -> web.Response:
    """Record an opt-out scoped to the group `value` names (once while it holds)."""
    if not record.org:  # which categories a group holds needs the ledger's record
        return page("try_again.html.j2", status=503)
    group = group_named(rt.settings, record.org, value)
    org = rt.settings.orgs.get(record.org)
    context = {"org_name": org.name if org else record.org,
               "masked_address": mask(record.address), "channel": record.channel}
    if group is None:
        return page("unsubscribe.html.j2", status=422, problem="That choice is not offered.",
                    groups=await asyncio.to_thread(preference_choices, rt, record), **context)
    already = await asyncio.to_thread(has_left, rt.consent, record, group)
    if not already:
        try:
            await asyncio.to_thread(
                rt.optouts.by_token, record, method=METHOD, client=request.remote,
                source=f"preference centre: {group.name}", categories=group.categories)
        except StoreUnavailable as exc:
            event(log, "opt_out_not_recorded", org=record.org, channel=record.channel,
                  method=METHOD, error=str(exc))
            return page("try_again.html.j2", status=503)
    return page("preferences_saved.html.j2", group=group.name, already=already,
                link=str(request.rel_url), **context)
