"""Where accepted mail goes: a local maildir (the embedded default) or an SMTP relay."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiosmtplib

from ..ledger.spool import QueuedCopy
from .smtp_client import CopyClient


class TemporaryFailure(Exception):
    """Try again later (4xx, connection refused, timeout)."""


class PermanentFailure(Exception):
    """The upstream refused for good (5xx): bounce to the sender."""


class MaildirUpstream:
    """Writes each copy as one file in PATH/new (tmp + fsync + rename: atomic)."""

    def __init__(self, path: str, hostname: str, tag: str = ""):
        self.root = Path(path)
        self.hostname = hostname.replace("/", "_").replace(":", "_")
        self.tag = tag  # the worker's: spool ids repeat across workers' spools
        for sub in ("tmp", "new", "cur"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _name(self, item: QueuedCopy) -> str:
        # Deterministic per copy: a redelivery after a crash overwrites, never duplicates.
        digest = hashlib.sha256(item.copy.data).hexdigest()[:12]
        return f"{int(item.created_at)}.G{self.tag}{item.id}_{digest}.{self.hostname}"

    def _write(self, item: QueuedCopy) -> str:
        name = self._name(item)
        final = self.root / "new" / name
        if final.exists() or (self.root / "cur" / name).exists():
            return name
        envelope = (f"Return-Path: <{item.copy.mail_from}>\r\n"
                    f"Delivered-To: {item.copy.rcpt}\r\n").encode()
        tmp = self.root / "tmp" / name
        with open(tmp, "wb") as fh:
            fh.write(envelope + item.copy.data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, final)
        dir_fd = os.open(self.root / "new", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return name

    async def send(self, item: QueuedCopy) -> str:
        try:
            name = await asyncio.to_thread(self._write, item)
        except OSError as exc:
            raise TemporaryFailure(f"maildir write failed: {exc.strerror}") from exc
        return f"maildir {name}"

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: str  # "" (opportunistic STARTTLS) | starttls | implicit | none

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        tls = parts.query.removeprefix("tls=")
        port = parts.port or (465 if tls == "implicit" else 25)
        return cls(parts.hostname or "localhost", port,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None, tls)

    def __str__(self) -> str:  # never shows the password
        return f"smtp://{self.host}:{self.port}"


class SmtpUpstream:
    """One reusable aiosmtplib connection per delivery worker."""

    def __init__(self, url: str, hostname: str, timeout: float = 60.0):
        self.target = SmtpTarget.parse(url)
        self.hostname = hostname
        self.timeout = timeout
        self.client: CopyClient | None = None

    async def _connect(self) -> CopyClient:
        t = self.target
        client = CopyClient(
            hostname=t.host, port=t.port, timeout=self.timeout, local_hostname=self.hostname,
            use_tls=t.tls == "implicit",
            start_tls=True if t.tls == "starttls" else (False if t.tls == "none" else None),
            tls_context=ssl.create_default_context() if t.tls in ("starttls", "implicit")
            else None,
        )
        await client.connect()
        if t.username:
            await client.login(t.username, t.password or "")
        return client

    async def send(self, item: QueuedCopy) -> str:
        try:
            if self.client is None or not self.client.is_connected:
                self.client = await self._connect()
            reply = await self.client.send_copy(item.copy.mail_from, item.copy.rcpt,
                                                item.copy.data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0] if exc.recipients else None
            code = refusal.code if refusal else 550  # the client has sent RSET
            text = f"{code} {refusal.message if refusal else exc}"
            raise (TemporaryFailure if 400 <= code < 500 else PermanentFailure)(text) from exc
        except aiosmtplib.SMTPNotSupported as exc:  # SMTPUTF8 needed, not offered
            raise PermanentFailure(f"553 5.6.7 {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            await self._drop()
            text = f"{exc.code} {exc.message}"
            raise (TemporaryFailure if exc.code < 500 else PermanentFailure)(text) from exc
        except (TimeoutError, aiosmtplib.SMTPException, OSError, socket.gaierror) as exc:
            await self._drop()
            raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from exc
        return f"{self.target} {reply}"

    async def _drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                client.close()

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


def make_upstream(url: str, hostname: str, timeout: float = 60.0, worker: int = 0):
    if url.startswith("maildir:"):
        return MaildirUpstream(url.removeprefix("maildir:"), hostname,
                               f"W{worker}." if worker else "")
    return SmtpUpstream(url, hostname, timeout)
