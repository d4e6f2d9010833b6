"""Shared helpers of the page tests: a real gateway on free loopback ports, tokens, and
a look at what the ledger holds. A plain module (not a conftest): tests import it."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from gateway import server
from gateway.config import Settings, parse
from gateway.consent import classify
from gateway.ledger import TokenRecord
from gateway.runtime import Runtime
from gateway.tokens import make_token

ADMIN_TOKEN = "test-admin-token"
ORG_NAME = "Acme Garden Ltd"
ADDRESS = "jane.doe@example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def make_settings(tmp_path: Path, *, secrets: list[str] | None = None, mode: str = "enforce",
                  org_name: str = ORG_NAME) -> Settings:
    """Settings for one test gateway: its own data dir and free loopback ports."""
    http_port, smtp_port = free_port(), free_port()
    secret_list = ", ".join(toml_string(s) for s in (secrets or ["test-unsubscribe-secret"]))
    text = f"""
[gateway]
data_dir = "data"
mode = "{mode}"

[smtp]
listen = "127.0.0.1:{smtp_port}"

[http]
listen = "127.0.0.1:{http_port}"
public_url = "http://127.0.0.1:{http_port}"
admin_token = "{ADMIN_TOKEN}"

[unsubscribe]
secret = [{secret_list}]

[delivery]
upstream = "maildir:outbox"

[sms]
outbox = "sms-outbox.jsonl"

[[org]]
id = "acme"
name = {toml_string(org_name)}
type = "commercial"
similar = [["lawnmowers", "hedge-trimmers", "garden-tools"]]

[[stream]]
id = "acme-news"
org = "acme"
purpose = "marketing"
category = "garden-tools"
smtp_username = "acme-news"
smtp_password = "test-smtp-password"
api_key = "sk_test_acme"
sms_from = ["+447400123000"]

[[stream]]
id = "acme-receipts"
org = "acme"
purpose = "service"
smtp_username = "acme-receipts"
smtp_password = "test-smtp-password-2"
"""
    return parse(text, None, tmp_path)


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

    def decide(self, address: str, stream: str = "acme-news", channel: str = "email"):
        """Decide (and record) one marketing or service message, as a channel would."""
        return self.rt.consent.decide(classify(self.rt.settings.stream(stream)), channel,
                                      address, message_id="<status@x>")

    def evaluate(self, address: str = ADDRESS, channel: str = "email"):
        return self.rt.consent.evaluate(classify(self.rt.settings.stream("acme-news")),
                                        channel, address)


@asynccontextmanager
async def running_gateway(tmp_path: Path, **options) -> AsyncIterator[TestGateway]:
    """The real gateway (HTTP, and whatever channels this build has) for one test."""
    running = await server.start(make_settings(tmp_path, **options))
    try:
        yield TestGateway(running)
    finally:
        await running.stop()


def operator_auth() -> aiohttp.BasicAuth:
    return aiohttp.BasicAuth("operator", ADMIN_TOKEN)


def tamper(token: str, index: int = 7) -> str:
    """The token with one base32 character changed."""
    replacement = "a" if token[index] != "a" else "b"
    return token[:index] + replacement + token[index + 1:]
