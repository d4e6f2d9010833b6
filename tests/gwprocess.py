"""A gateway in its own process, for tests that kill it (SIGKILL, SIGTERM) or hammer it.

`GatewayProcess` writes a config from gwtest's BASE_TOML, starts `gateway run`, waits
until both listeners answer, and keeps the log in a file (a pipe would fill up under load
and stall the gateway)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gwtest import BASE_TOML, SHARED_LEDGER_PRIVACY, free_port

from gateway.evidence import parse_evidence
from gateway.ledger import open_ledger

ADMIN = {"Authorization": "Bearer test-admin-token"}
SMS_KEY = {"Authorization": "Bearer sk_news"}


def config_text(tmp_path: Path, smtp_port: int, http_port: int, upstream: str,
                delivery_extra: str = "", ledger_url: str = "", **over) -> str:
    values = dict(
        data_dir=str(tmp_path / "data"), mode="enforce", smtp_port=smtp_port,
        http_port=http_port, smtp_extra="", secret='"s"', reply_handling="rewrite",
        upstream=upstream, max_age="5d", dkim="", org_name="Acme Garden Ltd",
        gateway_extra="")
    values.update(over)
    text = BASE_TOML.format(**values)
    if delivery_extra:
        text = text.replace("workers = 2\n", f"workers = 2\n{delivery_extra}\n", 1)
    if ledger_url:
        text += f'\n[ledger]\nurl = "{ledger_url}"\n' + SHARED_LEDGER_PRIVACY
    return text


async def send_numbered(smtp_port: int, start: int, n: int, prefix: str,
                        accepted: list[str]) -> None:
    """Messages `start` to `start + n - 1` over one connection, AUTH as acme-news: message i
    to r{i}@example.com with Message-ID <{prefix}-{i}@acme.test>, appended to `accepted`
    as soon as it is answered 250."""
    import aiosmtplib

    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port, start_tls=False,
                             timeout=20)
    for attempt in range(3):  # as an MTA would: a connection lost before any message
        try:                  # was sent is simply made again (nothing was accepted)
            await client.connect()
            await client.login("acme-news", "news-pass")
            break
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError):
            client.close()
            if attempt == 2:
                raise
            print(f"send_numbered: connection {start} lost before sending; reconnecting")
            await asyncio.sleep(0.2)
    async with client:
        for i in range(start, start + n):
            mid = f"<{prefix}-{i}@acme.test>"
            data = (f"From: news@acme.test\r\nTo: r{i}@example.com\r\nSubject: n{i}\r\n"
                    f"Message-ID: {mid}\r\n\r\nhello {i}\r\n").encode()
            await client.sendmail("news@acme.test", [f"r{i}@example.com"], data)
            accepted.append(mid)


async def send_mail(smtp_port: int, first: int, count: int, connections: int,
                    prefix: str = "m") -> list[str]:
    """`count` messages (see `send_numbered`) over `connections` concurrent connections;
    the ids answered 250."""
    accepted: list[str] = []
    per = count // connections
    await asyncio.gather(*(send_numbered(smtp_port, first + c * per, per, prefix, accepted)
                           for c in range(connections)))
    return accepted


def seed(data_dir: Path, emails: list[str] = (), phones: list[str] = (),
         ledger_url: str = "") -> None:
    """Consent evidence for each address, written before the gateway starts."""
    ledger = open_ledger(ledger_url, data_dir)
    records = [parse_evidence({"org": "acme", "channel": channel, "address": address,
                               "basis": "consent", "obtained_at": "2026-01-01T00:00:00Z",
                               "source": "test fixture"},
                              {"acme": "GB"})
               for channel, addresses in (("email", emails), ("sms", phones))
               for address in addresses]
    if records:
        ledger.record_evidence_many(records)
    ledger.close()


@dataclass
class GatewayProcess:
    tmp_path: Path
    upstream: str
    delivery_extra: str = ""
    ledger_url: str = ""
    over: dict = field(default_factory=dict)
    smtp_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    starts: int = 0
    # More environment for the gateway (e.g. libfaketime's LD_PRELOAD and FAKETIME).
    env: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config = self.tmp_path / "config.toml"
        self.config.write_text(config_text(self.tmp_path, self.smtp_port, self.http_port,
                                           self.upstream, self.delivery_extra,
                                           self.ledger_url, **self.over))
        self.log = self.tmp_path / "gateway.log"

    @property
    def data_dir(self) -> Path:
        return self.tmp_path / "data"

    @property
    def outbox(self) -> Path:
        return self.data_dir / "sms.jsonl"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        return self.launch().wait_listening(timeout)

    def launch(self) -> GatewayProcess:
        """Start `gateway run` without waiting for it (see `wait_listening`)."""
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"\n--- start {self.starts} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config)],
                stdout=log, stderr=log, cwd=self.tmp_path,
                env={**os.environ, "PYTHONFAULTHANDLER": "1", **self.env})  # SIGABRT: stacks
        return self

    def wait_listening(self, timeout: float = 20.0) -> GatewayProcess:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        pending = [self.smtp_port, self.http_port]
        while pending:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited at start:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("gateway did not start listening")
            try:
                socket.create_connection(("127.0.0.1", pending[0]), timeout=0.2).close()
                pending.pop(0)
            except OSError:
                time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, as a crash or the OOM killer would. Returns once
        nothing listens on the ports any more (worker processes die with `gateway run`,
        but one just forked may take a moment), so a restart is not fooled by them."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(
                    self._listening(p) for p in (self.smtp_port, self.http_port)):
                time.sleep(0.02)

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM and the exit status (the gateway must drain and exit 0)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack
            time.sleep(1)
            self.kill()
            raise AssertionError(f"gateway ignored SIGTERM for {timeout}s; stacks in "
                                 f"{self.log}:\n{self.log_text()[-6000:]}") from None

    def log_text(self) -> str:
        return self.log.read_text("utf-8", "replace") if self.log.exists() else ""
