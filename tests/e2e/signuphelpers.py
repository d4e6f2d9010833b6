"""Shared helpers of the double opt-in and preference centre tests: a real gateway whose
upstream is a real aiosmtpd sink, the admin API's sign-up call, and the link read back
out of the confirmation email the sink received."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from gwtest import make_settings
from pagehelpers import ADMIN_TOKEN, TestGateway

from gateway import server

ADDRESS = "new.person@example.com"
SIGNUP = {"org": "acme", "channel": "email", "address": ADDRESS,
          "source": "https://acme.example/newsletter (form v3)",
          "wording": "Yes, send me Acme's garden offers by email"}
CATEGORY_NAMES = {"lawnmowers": "Garden machinery"}  # acme's [[org]] category_names


@asynccontextmanager
async def signup_gateway(tmp_path: Path, sink=None, ledger_url: str = "",
                         **over) -> AsyncIterator[TestGateway]:
    if sink is not None:
        over["upstream"] = f"smtp://127.0.0.1:{sink.port}?tls=none"
    org_keys = {key: over.pop(key) for key in ("category_names", "rulesets") if key in over}
    settings = make_settings(tmp_path, ledger_url=ledger_url, **over)
    if org_keys:  # as `category_names = {...}` or `rulesets = {...}` in acme's [[org]] table
        acme = dataclasses.replace(settings.orgs["acme"], **org_keys)
        settings = dataclasses.replace(settings, orgs={**settings.orgs, "acme": acme})
    running = await server.start(settings)
    try:
        yield TestGateway(running)
    finally:
        await running.stop()


async def subscribe(http, gw: TestGateway, **fields) -> tuple[int, dict]:
    async with http.post(f"{gw.base_url}/api/v1/subscriptions", json={**SIGNUP, **fields},
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        return resp.status, await resp.json()


def parsed(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def confirmation_link(raw: bytes) -> str:
    """The /c/ link of a confirmation email, from its text part."""
    text = parsed(raw).get_body(("plain",)).get_content()
    [link] = set(re.findall(r"https?://\S+/c/[a-z0-9]+", text))
    return link
