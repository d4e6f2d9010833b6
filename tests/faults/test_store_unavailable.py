"""The ledger or the spool cannot be written (another process holds the write lock, the
disk is full): the gateway answers temporary failures (SMTP 451, HTTP 503) instead of
accepting and losing, /healthz says unhealthy, and everything works once it is over."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sqlite3
import subprocess

import aiohttp
import aiosmtplib
import pytest
from gwtest import SOFT_OPT_IN, Sink, free_port, make_settings, seed

from gateway import server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ADMIN = {"Authorization": "Bearer test-admin-token"}
PERSON = "+447400123456"


@contextlib.contextmanager
def write_locked(db_path):
    """Hold the database's write lock from another connection, as another process would."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=10)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


@pytest.fixture
async def gw(tmp_path, sink):
    settings = make_settings(tmp_path, upstream=f"smtp://127.0.0.1:{sink.port}?tls=none")
    running = await server.start(settings)
    seed(running.runtime, address="jane@example.com", **SOFT_OPT_IN)
    seed(running.runtime, channel="sms", address=PERSON, basis="consent", source="form")
    yield running
    await running.stop()


async def send_mail(gw, i: int = 0) -> tuple[int, str]:
    """The SMTP reply to the end of DATA (code, text)."""
    port = gw.runtime.settings.smtp.listen.port
    data = (f"From: news@acme.test\r\nTo: jane@example.com\r\nSubject: s{i}\r\n"
            f"Message-ID: <locked-{i}@acme.test>\r\n\r\nhello\r\n").encode()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                               timeout=30) as client:
        await client.login("acme-news", "news-pass")
        try:
            _, reply = await client.sendmail("news@acme.test", ["jane@example.com"], data)
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
    return 250, reply


class Http:
    def __init__(self, gw, session: aiohttp.ClientSession):
        self.base = gw.runtime.settings.http.public_url
        self.session = session
        self.rt = gw.runtime
        self.links = [self.new_link() for _ in range(2)]

    async def status(self, method: str, path: str, **kw) -> int:
        async with self.session.request(method, self.base + path, **kw) as resp:
            await resp.read()
            return resp.status

    def new_link(self) -> str:
        """A stored unsubscribe token (stored now, while the ledger can be written)."""
        token, record = self.rt.tokens.issue(org="acme", channel="email",
                                             address="jane@example.com", stream="acme-news",
                                             message_id="<m@acme.test>")
        self.rt.ledger.record_tokens([record])
        return f"/u/{token}"

    async def writes(self) -> dict[str, int]:
        """Every kind of write the HTTP side does, at once."""
        calls = {
            "optout": self.status("POST", "/api/v1/optouts", headers=ADMIN, json={
                "org": "acme", "channel": "email", "address": "leaver@example.com"}),
            "consent": self.status("POST", "/api/v1/consents", headers=ADMIN, json={
                "org": "acme", "channel": "email", "address": "new@example.com",
                "basis": "consent", "obtained_at": "2026-01-01T00:00:00Z", "source": "f"}),
            "sms": self.status("POST", "/api/v1/sms", json={"to": PERSON, "body": "Sale"},
                               headers={"Authorization": "Bearer sk_news"}),
            "unsubscribe": self.status("POST", self.links.pop(), data={"scope": "channel"}),
        }
        answers = await asyncio.gather(*calls.values())
        return dict(zip(calls, answers, strict=True))

    async def health(self) -> int:
        return await self.status("GET", "/healthz")


async def test_a_locked_ledger_gives_451_and_503_then_recovers(gw, sink):
    ledger_db = gw.runtime.ledger.path
    async with aiohttp.ClientSession() as session:
        http = Http(gw, session)
        with write_locked(ledger_db):
            mail, writes, health = await asyncio.gather(send_mail(gw, 1), http.writes(),
                                                        http.health())
        assert mail[0] == 451, mail
        # The operators' writes and a text wait for the ledger; the person's opt-out is
        # kept in data_dir, answered as usual, and written once the lock is gone.
        assert writes == {"optout": 503, "consent": 503, "sms": 503, "unsubscribe": 200}
        assert health == 503
        assert sink.messages == [] and gw.runtime.spool.stats()["depth"] == 0
        assert gw.runtime.optouts.pending.count == 1

        assert (await send_mail(gw, 2))[0] == 250
        assert await http.writes() == {"optout": 201, "consent": 201, "sms": 202,
                                       "unsubscribe": 200}
        assert await http.health() == 200
        for _ in range(100):  # replayed within a second or two
            if not gw.runtime.optouts.pending.count:
                break
            await asyncio.sleep(0.1)
        assert gw.runtime.optouts.pending.count == 0  # the kept opt-out is in the ledger
    await sink.wait_for(1)


async def test_a_locked_spool_gives_451_and_an_unhealthy_healthz_then_recovers(gw, sink):
    async with aiohttp.ClientSession() as session:
        http = Http(gw, session)
        with write_locked(gw.runtime.spool.path):
            mail, health = await asyncio.gather(send_mail(gw, 1), http.health())
            # The HTTP side does not need the spool.
            assert await http.status("POST", "/api/v1/optouts", headers=ADMIN, json={
                "org": "acme", "channel": "email", "address": "x@example.com"}) == 201
        assert mail[0] == 451, mail
        assert health == 503
        assert (await send_mail(gw, 2))[0] == 250
        assert await http.health() == 200
    (_, _, data), = await sink.wait_for(1)
    assert b"<locked-2@acme.test>" in data


def can_mount_tmpfs() -> bool:
    return os.geteuid() == 0 and os.path.exists("/proc/filesystems") and \
        "tmpfs" in open("/proc/filesystems").read()


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB tmpfs for the data directory (needs root; skipped otherwise)."""
    if not can_mount_tmpfs():
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory) -> os.PathLike:
    """Fill the file system to the last byte; returns the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while fh.write(b"\0" * size):
                    pass
    return filler


async def test_a_full_disk_gives_451_and_503_then_recovers(tmp_path, small_disk):
    sink = Sink(free_port())
    await sink.start()
    settings = make_settings(tmp_path, data_dir=str(small_disk),
                             upstream=f"smtp://127.0.0.1:{sink.port}?tls=none")
    gw = await server.start(settings)
    try:
        seed(gw.runtime, address="jane@example.com", **SOFT_OPT_IN)
        seed(gw.runtime, channel="sms", address=PERSON, basis="consent", source="form")
        async with aiohttp.ClientSession() as session:
            http = Http(gw, session)
            filler = fill(small_disk)
            mails = [await send_mail(gw, i) for i in range(3)]
            writes, health = await http.writes(), await http.health()
            assert {code for code, _ in mails} == {451}, mails
            assert set(writes.values()) <= {503}, writes
            assert health == 503
            assert sink.messages == []

            filler.unlink()
            assert (await send_mail(gw, 9))[0] == 250
            assert await http.health() == 200
            assert (await http.writes())["optout"] == 201
        (_, _, data), = await sink.wait_for(1)
        assert b"<locked-9@acme.test>" in data
    finally:
        await gw.stop()
        await sink.stop()


async def test_a_full_disk_under_the_sms_outbox_is_a_provider_error_not_a_crash(
        tmp_path, small_disk):
    settings = make_settings(tmp_path)
    outbox = small_disk / "sms.jsonl"
    settings = dataclasses.replace(settings, sms=dataclasses.replace(settings.sms,
                                                                     outbox=outbox))
    gw = await server.start(settings)
    try:
        seed(gw.runtime, channel="sms", address=PERSON, basis="consent", source="form")
        async with aiohttp.ClientSession() as session:
            http = Http(gw, session)
            sms = {"to": PERSON, "body": "Spring sale"}
            filler = fill(small_disk)
            async with session.post(http.base + "/api/v1/sms", json=sms,
                                    headers={"Authorization": "Bearer sk_news"}) as resp:
                assert resp.status == 502, await resp.text()
                assert "retry later" in (await resp.json())["message"]
            filler.unlink()
            assert await http.status("POST", "/api/v1/sms", json=sms,
                                     headers={"Authorization": "Bearer sk_news"}) == 202
        lines = outbox.read_text("utf-8").splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["to"] == PERSON
    finally:
        await gw.stop()


async def test_a_decision_that_cannot_be_recorded_leaves_nothing_spooled(gw, sink,
                                                                         monkeypatch):
    """451 means "not taken": a copy spooled before the decision failed to record would
    go out unaudited, and again when the client retries."""
    from gateway.errors import StoreUnavailable

    write_batch = gw.runtime.ledger.write_batch

    def locked(tokens=(), decisions=()):
        if decisions:
            raise StoreUnavailable("ledger write failed: database is locked")
        return write_batch(tokens, decisions)

    monkeypatch.setattr(gw.runtime.ledger, "write_batch", locked)
    assert (await send_mail(gw, 1))[0] == 451
    await asyncio.sleep(0.3)
    assert gw.runtime.spool.stats()["depth"] == 0 and sink.messages == []
