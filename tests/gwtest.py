"""Shared test support: free ports, settings from TOML, a real aiosmtpd sink, evidence seeding.

Imported by name (`from gwtest import ...`): several conftest.py files share the module
name `conftest`, so importing from it picks whichever pytest loaded last."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP as SinkSMTP

from gateway import config
from gateway.evidence import parse_evidence

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this test process was given before: the kernel may
    hand the same free port to two calls in a row (a gateway's SMTP and HTTP ports)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


BASE_TOML = """
[gateway]
data_dir = "{data_dir}"
mode = "{mode}"
{gateway_extra}

[smtp]
listen = "127.0.0.1:{smtp_port}"
hostname = "gw.test"
{smtp_extra}

[http]
listen = "127.0.0.1:{http_port}"
public_url = "http://127.0.0.1:{http_port}"
admin_token = "test-admin-token"

[unsubscribe]
secret = {secret}
mailto_domain = "unsub.gw.test"
reply_handling = "{reply_handling}"

[delivery]
upstream = "{upstream}"
retry_initial = "1s"
retry_max = "2s"
max_age = "{max_age}"
workers = 2

{dkim}

[sms]
outbox = "{data_dir}/sms.jsonl"

[[org]]
id = "acme"
name = "{org_name}"
type = "commercial"
similar = [["lawnmowers", "hedge-trimmers", "garden-tools"], ["decking", "fencing"]]

[[org]]
id = "owls"
name = "Save the Owls"
type = "charity"

[[stream]]
id = "acme-news"
org = "acme"
purpose = "marketing"
nature = "commercial"
category = "garden-tools"
smtp_username = "acme-news"
smtp_password = "news-pass"
api_key = "sk_news"
sms_from = ["+447400123000"]
allow_headers = true

[[stream]]
id = "acme-fixed"
org = "acme"
purpose = "marketing"
category = "garden-tools"
smtp_username = "acme-fixed"
smtp_password = "fixed-pass"
api_key = "sk_fixed"
allow_headers = false

[[stream]]
id = "acme-service"
org = "acme"
purpose = "service"
smtp_username = "acme-service"
smtp_password = "service-pass"
api_key = "sk_service"
allow_headers = false
"""


# Gateways sharing a ledger share its suppression key (each data_dir would generate its own).
SHARED_LEDGER_PRIVACY = '\n[privacy]\nsuppression_key = "test-suppression-key"\n'


def make_settings(tmp_path: Path, **over) -> config.Settings:
    values = dict(
        data_dir=str(tmp_path / "data"), mode="enforce", smtp_port=free_port(),
        http_port=free_port(), smtp_extra="", secret='"test-secret"',
        reply_handling="rewrite", upstream=f"maildir:{tmp_path / 'outbox'}", max_age="5d",
        dkim="", org_name="Acme Garden Ltd", gateway_extra="", ledger_url="", extra="",
    )
    values.update(over)
    text = textwrap.dedent(BASE_TOML.format(**values))
    if values["ledger_url"]:  # else SQLite in data_dir, the default
        text += f'\n[ledger]\nurl = "{values["ledger_url"]}"\n'
        text += SHARED_LEDGER_PRIVACY
    text += values["extra"]  # more sections, e.g. [esp.sendgrid]
    return config.parse(text, None, tmp_path)


@dataclass
class Sink:
    """A real SMTP server standing in for the upstream relay."""

    port: int
    messages: list = field(default_factory=list)  # (mail_from, rcpt_tos, bytes)
    reply: str = "250 OK"
    replies: list = field(default_factory=list)  # used first, one per DATA
    server: asyncio.AbstractServer | None = None

    async def handle_DATA(self, server, session, envelope):
        reply = self.replies.pop(0) if self.replies else self.reply
        if reply.startswith("250"):
            sender = "" if envelope.mail_from == "<>" else envelope.mail_from
            self.messages.append((sender, list(envelope.rcpt_tos),
                                  envelope.original_content))
        return reply

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SinkSMTP(self, decode_data=False, enable_SMTPUTF8=True, hostname="sink",
                             loop=loop),
            "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def wait_for(self, count: int, timeout: float = 10.0) -> list:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.messages) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"sink got {len(self.messages)} of {count} messages")
            await asyncio.sleep(0.05)
        return self.messages


@pytest.fixture
async def sink():
    s = Sink(free_port())
    await s.start()
    yield s
    await s.stop()


def seed(rt, **fields) -> int:
    """Store one evidence record (fields as in the API)."""
    base = {"org": "acme", "channel": "email", "obtained_at": "2026-01-10T10:00:00Z",
            "source": "test fixture"}
    base.update(fields)
    regions = {o.id: o.default_region for o in rt.settings.orgs.values()}
    return rt.ledger.record_evidence(parse_evidence(base, regions), "test")


SOFT_OPT_IN = dict(basis="soft_opt_in", context="sale", categories=["lawnmowers"],
                   opt_out_offered=True, source="checkout, opt-out box shown")


# -- the spool of a running (in-process) gateway ----------------------------------------


async def wait_until_spool_is_empty(gw, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while gw.runtime.spool.stats()["depth"]:
        assert loop.time() < deadline, "the spool never emptied"
        await asyncio.sleep(0.05)


async def two_more_attempts_each(gw, timeout: float = 10.0) -> None:
    """Wait until every queued copy has failed twice more: an attempt that began before
    now (decided before an opt-out made just now) is over, and one begun after it too."""
    since = time.time()
    conn = gw.runtime.spool.conn
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with gw.runtime.spool._lock:
            short = conn.execute(
                "SELECT COUNT(*) FROM spool s WHERE status = 'queued' AND (SELECT COUNT(*) "
                "FROM delivery_log l WHERE l.spool_id = s.id AND l.at > ?) < 2",
                (since,)).fetchone()[0]
        if not short:
            return
        assert loop.time() < deadline, "copies were not tried again"
        await asyncio.sleep(0.05)


# -- the ledger on both backends ---------------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL cluster for the whole test session (see pgcluster.py).
    Skips the PostgreSQL half of a test without PostgreSQL, except under CI=true."""
    import os

    import pgcluster

    if pgcluster.server_bindir() is None:
        message = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    cluster = pgcluster.start_cluster(free_port())
    yield cluster
    pgcluster.remove_cluster(cluster)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request) -> str:
    """`[ledger] url` for each backend: "" (SQLite in data_dir), or a fresh empty
    PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("pg_cluster").new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_ledger(request, tmp_path_factory):
    """`fresh_ledger()`: a new empty ledger on each backend, each call (for property
    tests, whose examples each need their own); closed at the end of the test."""
    from gateway.ledger import open_ledger

    opened = []

    def make():
        if request.param == "sqlite":
            book = open_ledger("", tmp_path_factory.mktemp("ledger"))
            opened.append(book)
            return book
        if not opened:  # one database per test, emptied for each example
            opened.append(open_ledger(request.getfixturevalue("pg_cluster").new_database(),
                                      tmp_path_factory.mktemp("ledger")))
        book = opened[0]
        with book._conn() as conn:
            conn.execute("TRUNCATE evidence, optouts, decisions, tokens, suppressions, "
                         "suppression_key RESTART IDENTITY")
        return book

    yield make
    for book in opened:
        book.close()


# -- privacy: what is left of an erased person ---------------------------------------------


def traces_in_ledger(ledger, ledger_url: str, needle: str) -> list[str]:
    """Where `needle` is still found: on PostgreSQL every text column of every table,
    searched with SELECTs; on SQLite the bytes of the ledger's files (and of the spools in
    the same directory), WAL included."""
    if ledger_url:
        found = []
        for table, column in ledger._tuples(
                "SELECT table_name, column_name FROM information_schema.columns WHERE "
                "table_schema = current_schema() AND data_type IN ('text', 'character varying')"):
            n = ledger._tuples(f"SELECT COUNT(*) FROM {table} WHERE {column} ILIKE ?",  # noqa: S608
                               [f"%{needle}%"])[0][0]
            if n:
                found.append(f"{table}.{column}")
        return found
    folder = Path(ledger.path).parent
    return [f.name for f in folder.iterdir()
            if f.name.startswith(("ledger", "spool")) and f.is_file()
            and needle.encode() in f.read_bytes()]


class EventLines(logging.Handler):
    """Every `event=` line the in-process gateways log during the whole session (at INFO
    and above): tests/test_zz_privacy_of_logs.py scans them for unmasked addresses."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("event="):
            self.lines.append(text)


EVENT_LINES = EventLines()


@pytest.fixture(autouse=True)
def every_event_line():
    """Collects every event line of the session (see EventLines), in each test: one that
    runs `gateway run` in-process (`logs.setup`) replaces the gateway logger's handlers."""
    gateway_log = logging.getLogger("gateway")
    level = gateway_log.level
    if not level or level > logging.INFO:
        gateway_log.setLevel(logging.INFO)
    if EVENT_LINES not in gateway_log.handlers:
        gateway_log.addHandler(EVENT_LINES)
    yield EVENT_LINES
    gateway_log.removeHandler(EVENT_LINES)
    gateway_log.setLevel(level)


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    """A self-signed certificate and key for STARTTLS tests (openssl)."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=gw.test", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem")], check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"
