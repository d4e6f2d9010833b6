"""Where allowed texts leave: one small `SmsProvider` interface and its three adapters.

- `OutboxProvider` appends each text as one JSON line to a file (the default; no network).
- `TwilioProvider` posts to Twilio's Messages resource (or anything that speaks it).
- `VonageProvider` posts to Vonage's SMS API (``/sms/json``).

Every adapter answers a `ProviderResult` or raises `ProviderError`. `RecipientOptedOut`
means the provider itself holds an opt-out for the number: Twilio error 21610 ("Attempt
to send to unsubscribed recipient") or Vonage status 7 ("Number barred": the number is on
the blocklist, e.g. after a STOP handled by the carrier). Callers should record it as an
opt-out and never retry it.

`ProviderResult.status` uses Twilio's vocabulary for every adapter, so a Twilio-shaped
answer can be built from any of them: Twilio's own status ("queued", "accepted", …),
"queued" for Vonage status 0 (accepted for delivery), "sent" for the outbox.

Retries (HTTP adapters): a 5xx or 429 answer, a connection error or a timeout is retried
up to ``retries`` more times, after ``backoff * 2**n`` seconds scaled by a random factor
in [0.5, 1) (jitter, so that many senders do not retry in step). Any other 4xx is final.
Vonage answers HTTP 200 with a per-part status; statuses 1 (throttled), 5 (internal
error) and 10 (too many binds) are retried, unless some part was already accepted,
because resending would duplicate that part. A timed-out request may have reached the
provider, so its retry can, rarely, send a text twice; neither API offers an idempotency
key for sending. Logs carry event names, status codes and message ids, never numbers,
bodies or credentials.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import os
import random
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, quote_plus

import aiohttp
from yarl import URL

from gateway.caching import cached_if_short
from gateway.errors import ConfigError, GatewayError
from gateway.sms.segments import measure

log = logging.getLogger(__name__)

SessionFactory = Callable[[], aiohttp.ClientSession]

TWILIO_UNSUBSCRIBED = "21610"
VONAGE_BARRED = "7"
VONAGE_RETRYABLE = frozenset({"1", "5", "10"})
MAX_BACKOFF_SECONDS = 30.0
_FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True)
class OutboundSms:
    """A text ready to leave: numbers in E.164, body final (opt-out text already added)."""

    to: str
    from_: str
    body: str
    status_callback: str | None = None
    client_ref: str | None = None


@dataclass(frozen=True)
class ProviderResult:
    """The provider's message id and status, and its whole answer as `raw`."""

    message_id: str
    status: str
    raw: dict[str, Any] = field(default_factory=dict)


class ProviderError(GatewayError):
    """The provider did not take the text.

    `status` is the HTTP status of its answer (None when there was none: connection error
    or timeout), `code` the provider's own error code as text (Twilio "21211", Vonage
    status "3"), `message` its explanation, `retryable` whether trying later may work.
    """

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retryable: bool = False,
        advice: str | None = None,
    ):
        self.provider = provider
        self.message = message
        self.status = status
        self.code = code
        self.retryable = retryable
        detail = ", ".join(
            part
            for part in (f"HTTP {status}" if status else "", f"code {code}" if code else "")
            if part
        )
        if advice is None:
            advice = "retry later" if retryable else "fix the request or the account first"
        where = f" ({detail})" if detail else ""
        super().__init__(f"{provider} did not take the text{where}: {message}; {advice}")


class RecipientOptedOut(ProviderError):
    """The provider holds an opt-out for the recipient; record it and never retry."""

    def __init__(self, provider: str, message: str, *, status: int | None, code: str):
        super().__init__(
            provider,
            message,
            status=status,
            code=code,
            retryable=False,
            advice="record an sms opt-out for the number and do not resend",
        )


@runtime_checkable
class SmsProvider(Protocol):
    """Something that sends a text and answers with the provider's message id."""

    name: str

    async def send(self, message: OutboundSms) -> ProviderResult:
        """Send `message`; raise `ProviderError` when the provider does not take it."""
        ...


class OutboxProvider:
    """Writes each text as one JSON line to `path` (fsynced); for development and demos.

    Each line: ``{"to", "from", "body", "message_id": "SM" + 32 hex, "created": ISO 8601 UTC}``.
    """

    name = "outbox"

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock = threading.Lock()  # one line at a time, even from several threads

    async def send(self, message: OutboundSms) -> ProviderResult:
        """Append `message` to the outbox file; answers status "sent"."""
        record = {
            "to": message.to,
            "from": message.from_,
            "body": message.body,
            "message_id": "SM" + uuid.uuid4().hex,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        try:
            await asyncio.to_thread(self._append, json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as exc:  # disk full, permissions: the text did not go
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise ProviderError(self.name, f"cannot write the outbox file: {exc.strerror}",
                                status=507 if full else 500, retryable=True) from exc
        log.info("event=sms_outbox_written message_id=%s", record["message_id"])
        return ProviderResult(record["message_id"], "sent", record)

    def _append(self, line: str) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab", buffering=0) as outbox:
                end = outbox.seek(0, os.SEEK_END)
                data = memoryview(line.encode("utf-8"))
                try:
                    while data:  # a raw write may be short
                        data = data[outbox.write(data):]
                    os.fsync(outbox.fileno())
                except OSError:
                    outbox.truncate(end)  # never leave half a line behind
                    raise


class _HttpProvider:
    """Posting a form with a timeout, and the retry loop shared by the HTTP adapters."""

    name = "http"

    def __init__(
        self, session_factory: SessionFactory, timeout: float, retries: int, backoff: float
    ):
        self._session_factory = session_factory
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retries = max(0, retries)
        self._backoff = backoff

    async def _post_form(
        self, url: str | URL, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """POST `form`; connection errors and timeouts become retryable ProviderErrors."""
        body = form_body(form)
        headers = {**headers, **_FORM_HEADERS} if headers else _FORM_HEADERS
        try:
            async with self._session_factory().post(
                url, data=body, headers=headers, timeout=self._timeout
            ) as response:
                body = await response.read()
                # Decoded here: aiohttp's text() guesses an encoding when none is declared.
                return response.status, body.decode(response.charset or "utf-8", "replace")
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            problem = "timed out" if isinstance(exc, TimeoutError) else f"unreachable ({exc})"
            raise ProviderError(self.name, f"{url} {problem}", retryable=True) from exc

    async def _with_retries(
        self, attempt: Callable[[], Awaitable[ProviderResult]]
    ) -> ProviderResult:
        for retry in range(self._retries + 1):
            try:
                return await attempt()
            except ProviderError as exc:
                if not exc.retryable or retry == self._retries:
                    log.warning(
                        "event=sms_provider_failed provider=%s status=%s code=%s attempts=%d",
                        self.name,
                        exc.status,
                        exc.code,
                        retry + 1,
                    )
                    raise
                delay = min(self._backoff * 2**retry, MAX_BACKOFF_SECONDS)
                delay *= random.uniform(0.5, 1.0)
                log.info(
                    "event=sms_provider_retry provider=%s status=%s code=%s attempt=%d delay=%.3f",
                    self.name,
                    exc.status,
                    exc.code,
                    retry + 1,
                    delay,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")


class TwilioProvider(_HttpProvider):
    """Sends through Twilio's REST API: ``POST /2010-04-01/Accounts/{sid}/Messages.json``."""

    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        api_base: str,
        session_factory: SessionFactory,
        timeout: float = 10,
        retries: int = 3,
        backoff: float = 0.5,
    ):
        super().__init__(session_factory, timeout, retries, backoff)
        # built by hand: aiohttp.BasicAuth is deprecated and encode_basic_auth is 3.14+ only
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._headers = {"Authorization": f"Basic {credentials}"}
        # Parsed once (aiohttp would parse a string on every request).
        self._url = URL(
            f"{api_base.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}"
            "/Messages.json"
        )

    async def send(self, message: OutboundSms) -> ProviderResult:
        """Create the message resource; `raw` is Twilio's message resource."""
        form = {"To": message.to, "From": message.from_, "Body": message.body}
        if message.status_callback:
            form["StatusCallback"] = message.status_callback
        return await self._with_retries(lambda: self._attempt(form))

    async def _attempt(self, form: dict[str, str]) -> ProviderResult:
        status, text = await self._post_form(self._url, form, self._headers)
        answer = _json_object(text)
        if 200 <= status < 300 and answer.get("sid"):
            return ProviderResult(str(answer["sid"]), str(answer.get("status", "")), answer)
        code = str(answer["code"]) if answer.get("code") is not None else None
        explanation = str(answer.get("message") or _excerpt(text) or "no message sid")
        if code == TWILIO_UNSUBSCRIBED:
            raise RecipientOptedOut(self.name, explanation, status=status, code=code)
        raise ProviderError(
            self.name, explanation, status=status, code=code, retryable=_retryable_http(status)
        )


class VonageProvider(_HttpProvider):
    """Sends through Vonage's SMS API: ``POST /sms/json``."""

    name = "vonage"

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        api_base: str,
        session_factory: SessionFactory,
        timeout: float = 10,
        retries: int = 3,
        backoff: float = 0.5,
    ):
        super().__init__(session_factory, timeout, retries, backoff)
        self._credentials = {"api_key": api_key, "api_secret": api_secret}
        self._url = f"{api_base.rstrip('/')}/sms/json"

    async def send(self, message: OutboundSms) -> ProviderResult:
        """Submit the text; `message_id` is the first part's id, `raw` Vonage's whole answer."""
        form = {
            **self._credentials,
            "to": message.to.removeprefix("+"),
            "from": _vonage_sender(message.from_),
            "text": message.body,
        }
        if measure(message.body).encoding == "UCS-2":
            form["type"] = "unicode"
        if message.status_callback:
            form["callback"] = message.status_callback
        if message.client_ref:
            form["client-ref"] = message.client_ref
        return await self._with_retries(lambda: self._attempt(form))

    async def _attempt(self, form: dict[str, str]) -> ProviderResult:
        status, text = await self._post_form(self._url, form)
        answer = _json_object(text)
        parts = [part for part in answer.get("messages") or [] if isinstance(part, dict)]
        if not (200 <= status < 300) or not parts:
            raise ProviderError(
                self.name,
                _excerpt(text) or "answer without messages",
                status=status,
                retryable=_retryable_http(status),
            )
        failed = [part for part in parts if str(part.get("status")) != "0"]
        if not failed:
            return ProviderResult(str(parts[0].get("message-id", "")), "queued", answer)
        code = str(failed[0].get("status"))
        explanation = str(failed[0].get("error-text") or f"status {code}")
        if code == VONAGE_BARRED:
            raise RecipientOptedOut(self.name, explanation, status=status, code=code)
        some_part_sent = len(failed) < len(parts)
        raise ProviderError(
            self.name,
            explanation,
            status=status,
            code=code,
            retryable=code in VONAGE_RETRYABLE and not some_part_sent,
        )


def make_provider(
    kind: str,
    *,
    outbox_path: str | os.PathLike[str],
    twilio: dict[str, Any],
    vonage: dict[str, Any],
    session: aiohttp.ClientSession | SessionFactory | None = None,
    timeout: float = 10,
    retries: int = 3,
    backoff: float = 0.5,
) -> SmsProvider:
    """The provider named by ``[sms] provider``, from its ``[sms.twilio]``/``[sms.vonage]`` keys.

    `session` is the one shared aiohttp session (or a callable returning it, for a session
    created later inside the running loop); the outbox needs none.
    """
    if kind == "outbox":
        return OutboxProvider(outbox_path)
    if kind not in ("twilio", "vonage"):
        raise ConfigError(
            "sms.provider", f"unknown provider {kind!r}; use twilio, vonage or outbox"
        )
    if session is None:
        raise TypeError(f"the {kind} provider needs an aiohttp session")
    factory = session if callable(session) else (lambda: session)
    if kind == "twilio":
        sid, token, base = _required(twilio, "twilio", "account_sid", "auth_token", "api_base")
        return TwilioProvider(sid, token, base, factory, timeout, retries, backoff)
    key, secret, base = _required(vonage, "vonage", "api_key", "api_secret", "api_base")
    return VonageProvider(key, secret, base, factory, timeout, retries, backoff)


def _required(section: dict[str, Any], name: str, *keys: str) -> list[str]:
    missing = [key for key in keys if not section.get(key)]
    if missing:
        raise ConfigError(
            f"sms.{name}.{missing[0]}",
            f'is empty but sms.provider is {name!r}; set it, or use provider = "outbox"',
        )
    return [str(section[key]) for key in keys]


def form_body(form: dict[str, str]) -> bytes:
    """`form` urlencoded (UTF-8), as aiohttp's FormData or `urlencode` would encode it, but
    each value's quoting remembered: a campaign sends one body (and one sender) many times,
    and quoting a text costs ~10 µs."""
    return "&".join([f"{_quoted(k)}={_quoted(v)}" for k, v in form.items()]).encode()


@cached_if_short(2048, maxsize=1024)  # up to a long text's size
def _quoted(value: str) -> str:
    return quote_plus(value)


def _retryable_http(status: int) -> bool:
    return status >= 500 or status == 429


def _json_object(text: str) -> dict[str, Any]:
    """The provider's answer as a JSON object; {} when it is not one. (The json module, not
    orjson: orjson reads an integer beyond 64 bits as a float.)"""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _excerpt(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def _vonage_sender(sender: str) -> str:
    # Vonage wants numeric senders without "+"; alphanumeric sender ids pass unchanged.
    digits = sender.removeprefix("+")
    return digits if digits.isdigit() else sender
