"""Shared helpers of the page tests: a real gateway on free loopback ports, tokens, and
a look at what the ledger holds. A plain module (not a conftest): tests import it."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from gwtest import make_settings

from gateway import server
from gateway.config import Settings
from gateway.consent import classify
from gateway.ledger import TokenRecord
from gateway.runtime import Runtime
from gateway.tokens import make_token

ADMIN_TOKEN = "test-admin-token"
ORG_NAME = "Acme Garden Ltd"
ADDRESS = "jane.doe@example.com"


def page_settings(tmp_path: Path, *, secrets: tuple[str, ...] = ("test-secret",),
                  mode: str = "enforce", org_name: str = ORG_NAME) -> Settings:
    """The suite's settings (tests/conftest.py) with these pages' variations."""
    return make_settings(tmp_path, secret=json.dumps(list(secrets)), mode=mode,
                         org_name=org_name)


@dataclass
class TestGateway:
    """A started gateway and the ways tests poke at it."""

    __test__ = False  # not a test class, despite the name

    running: server.RunningGateway

    @property
    def rt(self) -> Runtime:
        return self.running.runtime

    @property
    def base_url(self) -> str:
        return self.rt.settings.http.public_url

    def issue(self, channel: str = "email", address: str = ADDRESS,
              message_id: str = "<m1@x>") -> str:
        """A stored token for `address`, as the mail or SMS side would issue it."""
        token, record = self.rt.tokens.issue(org="acme", channel=channel, address=address,
                                             stream="acme-news", message_id=message_id)
        self.rt.ledger.record_tokens([record])
        return token

    def issue_signed_with(self, secret: str, address: str = ADDRESS) -> str:
        """A stored token signed with `secret` (which may not be one of ours)."""
        token, token_id = make_token(secret)
        self.rt.ledger.record_tokens([TokenRecord(token_id, "acme", "email", address,
                                                  "acme-news", "<m2@x>", None)])
        return token

    def link(self, token: str, channel: str = "email") -> str:
        return f"{self.base_url}/{'s' if channel == 'sms' else 'u'}/{token}"

    def opt_outs(self) -> list[dict]:
        return list(self.rt.ledger.iter_all("optouts"))

    def decide(self, address: str, stream: str = "acme-news", channel: str = "email",
               message_id: str = "<status@x>"):
        """Decide (and record) one message of `stream`, as a channel would."""
        return self.rt.consent.decide(classify(self.rt.settings.stream(stream)), channel,
                                      address, message_id=message_id)

    def evaluate(self, address: str = ADDRESS, channel: str = "email"):
        return self.rt.consent.evaluate(classify(self.rt.settings.stream("acme-news")),
                                        channel, address)


@asynccontextmanager
async def running_gateway(tmp_path: Path, **options) -> AsyncIterator[TestGateway]:
    """The real gateway (HTTP, and whatever channels this build has) for one test."""
    running = await server.start(page_settings(tmp_path, **options))
    try:
        yield TestGateway(running)
    finally:
        await running.stop()


def basic_auth(password: str = ADMIN_TOKEN, user: str = "operator") -> dict[str, str]:
    """An Authorization header for the operator pages (any user name will do)."""
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def tamper(token: str, index: int = 7) -> str:
    """The token with one base32 character changed."""
    replacement = "a" if token[index] != "a" else "b"
    return token[:index] + replacement + token[index + 1:]
