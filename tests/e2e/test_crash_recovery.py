"""A subprocess gateway killed with SIGKILL after accepting mail loses nothing."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from gwprocess import send_mail
from gwtest import BASE_TOML, free_port

from gateway.evidence import parse_evidence
from gateway.ledger import Ledger

pytestmark = pytest.mark.slow


def write_config(tmp_path, sink_port: int, processes: int = 1) -> tuple:
    smtp_port, http_port = free_port(), free_port()
    text = BASE_TOML.format(
        data_dir=str(tmp_path / "data"), mode="enforce", smtp_port=smtp_port,
        http_port=http_port, smtp_extra="", secret='"s"', reply_handling="rewrite",
        upstream=f"smtp://127.0.0.1:{sink_port}?tls=none", max_age="5d", dkim="",
        org_name="Acme Garden Ltd", gateway_extra=f"processes = {processes}")
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path, smtp_port, http_port


def start_gateway(config_path, smtp_port: int) -> subprocess.Popen:
    """`gateway run`, its log appended to gateway.log beside the config (a pipe nobody
    reads would fill and stall it); returns once the SMTP port answers."""
    log = Path(config_path).with_name("gateway.log")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config",
                                 str(config_path)], stdout=out, stderr=out)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", smtp_port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(log.read_text("utf-8", "replace")) from None
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("gateway did not start")


def seed_recipients(data_dir, count: int) -> None:
    ledger = Ledger(data_dir)
    records = [parse_evidence({"org": "acme", "channel": "email",
                               "address": f"r{i}@example.com", "basis": "consent",
                               "obtained_at": "2026-01-01T00:00:00Z", "source": "test"},
                              {"acme": "GB"})
               for i in range(count)]
    ledger.record_evidence_many(records)
    ledger.close()


# With two worker processes the mail lands in both workers' spools (five connections);
# SIGKILL of `gateway run` takes the workers down with it.
@pytest.mark.parametrize("processes", [1, 2])
async def test_sigkill_after_accepting_50_messages_loses_none_and_duplicates_none(
        tmp_path, sink, processes):
    await sink.stop()  # upstream down: every accepted message sits in the spool
    config_path, smtp_port, _ = write_config(tmp_path, sink.port, processes)
    seed_recipients(tmp_path / "data", 50)
    proc = await asyncio.to_thread(start_gateway, config_path, smtp_port)
    accepted = []
    try:
        accepted = await send_mail(smtp_port, 0, 50, 1 if processes == 1 else 5, "crash")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(accepted) == 50
    await sink.start()
    proc = await asyncio.to_thread(start_gateway, config_path, smtp_port)
    try:
        messages = await sink.wait_for(50, timeout=60)
        await asyncio.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    ids = Counter(email.message_from_bytes(m[2], policy=email.policy.default)["Message-ID"]
                  for m in sink.messages)
    assert set(ids) == set(accepted)
    assert max(ids.values()) == 1, "a message was delivered twice"
    assert len(messages) == 50
