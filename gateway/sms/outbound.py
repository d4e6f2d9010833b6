"""Outbound texts: from an app's request to the provider, with one consent decision each.

`Relay.send` runs one small step after another:

1. `prepare`: the recipient normalised to E.164 (the stream's org region), the sender
   chosen and checked (one of the stream's ``sms_from``, see `Relay.sender`), the body
   checked, and per-text classification only where the stream has ``allow_headers``
   (see `Relay.classification`). A bad request raises `TextRejected`, before any
   decision is recorded.
2. decide: `ConsentService.adecide` decides on that classification and records the
   decision. Blocked (enforce mode) raises `TextBlocked`.
3. `opt_out.opt_out_line`: an allowed marketing text gets ``stop_text`` appended (unless
   it already carries a working opt-out); from an alphanumeric sender, which cannot be
   replied to, it gets an opt-out link (``/s/TOKEN``) instead.
4. send through the provider. Only its acceptance makes a `SentText`; a provider that
   holds an opt-out for the number (`RecipientOptedOut`) makes us record that opt-out,
   and the text counts as blocked (`opted_out`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..addresses import mask, normalise_phone
from ..caching import cached_if_short
from ..config import Stream
from ..consent import Classification, Verdict, classify
from ..errors import GatewayError, InvalidAddress
from ..identification import IDENTIFYING as BRANDED
from ..identification import branded
from ..logs import event
from ..optouts import OptOutRequest
from ..policy import Decision, reasons
from ..runtime import Runtime
from .deferral import hold_text
from .opt_out import compose, is_alphanumeric_sender, opt_out_line, segment_warnings
from .providers import OutboundSms, ProviderError, ProviderResult, RecipientOptedOut, SmsProvider
from .segments import Segments, measure

log = logging.getLogger("gateway.sms.outbound")

MAX_BODY_CHARS = 1600  # Twilio's limit for one message (error 21617)
# What the app is told when the gateway itself failed: what to do, no internal detail.
STORE_UNAVAILABLE = ("the gateway cannot use its store just now (the operator's log says "
                     "why); nothing was sent; try again in a minute")
INTERNAL_ERROR = ("the gateway hit an internal error (the operator's log says where); "
                  "nothing was sent; try again later")

# (stream, app's callback URL) -> our callback URL handed to the provider
CallbackUrl = Callable[[Stream, str], str]


@dataclass(frozen=True)
class TextRequest:
    """What an app asks to send; every field as received, nothing normalised yet."""

    to: str
    body: str
    from_: str | None = None
    purpose: str | None = None
    nature: str | None = None
    category: str | None = None
    status_callback: str | None = None


class TextRejected(GatewayError):
    """The request itself is wrong (bad number, sender, body): nothing was decided or sent.

    `error` is our error code, `field` the request field at fault, `twilio_code` the code
    Twilio's own API answers for the same mistake, `status` the HTTP status: 400 for a
    malformed request, 422 for one this stream may not make (a sender not in its
    sms_from, a classification it may not override)."""

    def __init__(self, error: str, field: str, detail: str, twilio_code: int,
                 status: int = 400):
        self.error, self.field, self.detail, self.twilio_code = error, field, detail, twilio_code
        self.status = status
        super().__init__(f"{field}: {detail}")


class TextBlocked(GatewayError):
    """The text may not go: the decision (or the provider's opt-out list) blocks it."""

    def __init__(self, decision: Decision, message_id: str):
        self.decision, self.message_id = decision, message_id
        super().__init__(f"blocked: {decision.reason}: {decision.explanation}")


@dataclass(frozen=True)
class Prepared:
    """A request that passed the checks: numbers in their final form."""

    to: str
    from_: str
    body: str
    classification: Classification


@dataclass(frozen=True)
class SentText:
    """A text the provider accepted, and what the app is told about it."""

    message_id: str  # ours: the decision's message id in the audit log
    to: str
    from_: str
    body: str  # the final body, opt-out text included
    segments: Segments
    warnings: tuple[str, ...]
    decision: Decision
    provider: str
    result: ProviderResult


def provider_problem(exc: ProviderError) -> str:
    """What to tell the app about a provider failure: status, code and the provider's own
    explanation, but never our provider URL (it holds our account id)."""
    detail = ", ".join(part for part in (f"HTTP {exc.status}" if exc.status else "",
                                         f"code {exc.code}" if exc.code else "") if part)
    what = exc.message if exc.status else "no answer (unreachable or timed out)"
    advice = "retry later" if exc.retryable else "the provider refused this text"
    return f"{exc.provider} did not take the text ({detail or 'no answer'}): {what}; {advice}"


def new_message_id() -> str:
    """Our id of one outbound text (Twilio's sid shape: "SM" + 32 hex, 128 random bits)."""
    return "SM" + secrets.token_hex(16)


@cached_if_short(32, maxsize=8192)
def _normalised_recipient(number: str, region: str) -> str:
    """`normalise_phone` (about 50 µs), remembered: recipients repeat. An invalid number
    raises."""
    return normalise_phone(number, region)


@cached_if_short(32, maxsize=1024)
def _sender_key(sender: str, region: str) -> str:
    """A sender as compared with sms_from: a number in E.164; a sender id ("ACME") or a
    short code as written, trimmed, case kept (what the phone shows)."""
    sender = sender.strip()
    if is_alphanumeric_sender(sender):
        return sender
    try:
        return normalise_phone(sender, region)
    except InvalidAddress:
        return sender  # a short code


@dataclass(frozen=True)
class Senders:
    """A stream's sms_from as a text's sender is checked against it."""

    default: str | None  # the first entry, used when a text names no sender
    allowed: frozenset[str]


@functools.lru_cache(maxsize=256)
def stream_senders(sms_from: tuple[str, ...], region: str) -> Senders:
    """A stream's sms_from in the form senders are compared in, made once per stream."""
    keys = [_sender_key(s, region) for s in sms_from]
    return Senders(keys[0] if keys else None, frozenset(keys))


def _as_classified(field: str, value: str) -> str:
    """A text's purpose, nature or category as `classify` reads it."""
    value = value.strip()
    return value if field == "category" else value.lower()


class Relay:
    """Sends apps' texts through the configured provider, one decision per text."""

    def __init__(self, rt: Runtime, provider: SmsProvider, callback_url: CallbackUrl):
        self.rt = rt
        self.provider = provider
        self.callback_url = callback_url
        self._children: dict[tuple, object] = {}

    def _child(self, metric, *labels: str):
        """`metric.labels(*labels)`, remembered: prometheus answers the same child for the
        same labels, so asking once per label set is enough."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None or found[0] is not metric:
            found = (metric, metric.labels(*labels))
            if len(self._children) >= 256:
                self._children.clear()
            self._children[key] = found
        return found[1]

    # -- who is asking ------------------------------------------------------------------

    def stream_for_key(self, api_key: str) -> Stream | None:
        """The stream whose api_key this is; every stream is compared, in constant time."""
        found = None
        for stream in self.rt.settings.streams:
            same = hmac.compare_digest(api_key.encode(), stream.api_key.encode())
            if same and stream.api_key and found is None:
                found = stream
        return found

    def stream_for_account(self, account: str, user: str, password: str) -> Stream | None:
        """Twilio-style login: account sid (= stream id) in the path and as user name,
        the stream's api_key as password."""
        stream = self.stream_for_key(password)
        if stream is None or not (hmac.compare_digest(account.encode(), stream.id.encode())
                                  and hmac.compare_digest(user.encode(), stream.id.encode())):
            return None
        return stream

    # -- checks -------------------------------------------------------------------------

    def region(self, stream: Stream) -> str:
        org = self.rt.settings.orgs.get(stream.org)
        return org.default_region if org else "GB"

    def prepare(self, stream: Stream, req: TextRequest) -> Prepared:
        """Normalise and check a request; `TextRejected` names what is wrong."""
        if not req.to.strip():
            raise TextRejected("invalid_request", "to", "required: the recipient's number",
                               21604)
        if not req.body.strip():
            raise TextRejected("invalid_request", "body", "required: the text to send", 21602)
        if len(req.body) > MAX_BODY_CHARS:
            raise TextRejected("body_too_long", "body",
                               f"{len(req.body)} characters; at most {MAX_BODY_CHARS}", 21617)
        if req.status_callback and not re.match(r"https?://\S+$", req.status_callback):
            raise TextRejected("invalid_request", "status_callback",
                               "expected an http(s) URL", 21609)
        region = self.region(stream)
        try:
            to = _normalised_recipient(req.to, region)
        except InvalidAddress as exc:
            raise TextRejected("invalid_number", "to", exc.reason, 21211) from None
        return Prepared(to, self.sender(stream, req.from_, region), req.body,
                        self.classification(stream, req))

    @staticmethod
    def classification(stream: Stream, req: TextRequest) -> Classification:
        """The stream's classification, with the text's purpose, nature and category
        where the stream has allow_headers. Without it, a text may only repeat the
        stream's own values: any other is refused, never silently ignored (an app that
        thinks it sends a service text should learn that it does not)."""
        if not stream.allow_headers and (req.purpose or req.nature or req.category):
            for field, given, own in (("purpose", req.purpose, stream.purpose),
                                      ("nature", req.nature, stream.nature),
                                      ("category", req.category, stream.category)):
                if given and _as_classified(field, given) != own:
                    raise TextRejected(
                        "override_not_allowed", field,
                        f"stream {stream.id!r} sends {field} {own!r} and may not set "
                        "another (allow_headers = false); leave it out, or send through "
                        "a stream classified as you need", 21601, status=422)
        return classify(stream, req.purpose, req.nature, req.category)

    def sender(self, stream: Stream, given: str | None, region: str) -> str:
        """The From: one of the stream's sms_from (numbers compared in E.164, sender ids
        as written, case kept); the first one when the text names none."""
        senders = stream_senders(stream.sms_from, region)
        if not given or not given.strip():
            if senders.default is None:
                raise TextRejected("invalid_from", "from", f"stream {stream.id!r} has no "
                                   "sms_from; configure one", 21603)
            return senders.default
        key = _sender_key(given, region)
        if key not in senders.allowed:
            raise TextRejected("from_not_allowed", "from", f"not one of stream {stream.id!r}'s "
                               "sms_from; send from a listed number or sender id, or leave "
                               "it out for the first", 21212, status=422)
        return key

    # -- sending ------------------------------------------------------------------------

    async def send(self, stream: Stream, req: TextRequest) -> SentText:
        """Check, decide, add the opt-out, send; raises TextRejected, TextBlocked,
        TextDeferred (held to be sent later) or ProviderError when the text did not go."""
        text = self.prepare(stream, req)
        message_id = new_message_id()
        verdict = await self.rt.consent.adecide(text.classification, "sms", text.to,
                                                message_id)
        if verdict.decision.deferred and not verdict.deliver:
            self._child(self.rt.metrics.decisions, "sms", verdict.outcome,
                        verdict.decision.reason).inc()
            await hold_text(self.rt, stream, text, message_id, verdict.decision,
                            req.status_callback)  # raises TextDeferred
        return await self.send_decided(stream, text, message_id, verdict,
                                       req.status_callback)

    async def send_decided(self, stream: Stream, text: Prepared, message_id: str,
                           verdict: Verdict, status_callback: str | None) -> SentText:
        """The rest of `send` once decided (also for a deferred text whose time came)."""
        decision = verdict.decision
        self._child(self.rt.metrics.decisions, "sms", verdict.outcome, decision.reason).inc()
        if not verdict.deliver:
            event(log, "sms_blocked", stream=stream.id, message_id=message_id,
                  reason=decision.reason, to=mask(text.to))
            raise TextBlocked(decision, message_id)
        warnings = [] if decision.allowed else [
            f"monitor mode: delivered although the decision is {decision.reason}"]
        given = text.body
        if decision.ruleset in BRANDED:  # the sender named first (gateway/identification.py)
            text = dataclasses.replace(text, body=branded(text.body, self.rt.settings.orgs.get(
                stream.org), decision))
        line = await opt_out_line(self.rt, stream, decision, to=text.to, from_=text.from_,
                                  body=text.body, message_id=message_id)
        body = compose(text.body, line)
        segments = measure(body)
        if body is not given and segments.segments > 1:
            # Without an added line, or when the whole text fits in one segment, the
            # opt-out line cannot have added a segment: no second measurement needed.
            warnings += segment_warnings(measure(given), segments)
        callback = self.callback_url(stream, status_callback) if status_callback else None
        outbound = OutboundSms(text.to, text.from_, body, callback, message_id)
        result = await self.deliver(stream, outbound, message_id)
        event(log, "sms_sent", stream=stream.id, message_id=message_id,
              provider=self.provider.name, provider_id=result.message_id,
              segments=segments.segments, encoding=segments.encoding, to=mask(text.to))
        return SentText(message_id, text.to, text.from_, body, segments, tuple(warnings),
                        decision, self.provider.name, result)

    async def deliver(self, stream: Stream, text: OutboundSms, message_id: str
                      ) -> ProviderResult:
        """Hand the text to the provider; its opt-out list becomes ours."""
        name = self.provider.name
        started = time.monotonic()
        try:
            result = await self.provider.send(text)
        except RecipientOptedOut as exc:
            self.rt.note("sms_provider", True)
            await self.record_provider_opt_out(stream, text.to, exc, message_id)
            explanation = f"the provider reports the recipient opted out (code {exc.code})"
            raise TextBlocked(Decision(False, reasons.OPTED_OUT, explanation),
                              message_id) from None
        except ProviderError as exc:
            self.rt.note("sms_provider", False, str(exc))
            event(log, "sms_provider_error", level=logging.WARNING, stream=stream.id,
                  message_id=message_id, provider=name, status=exc.status, code=exc.code)
            raise
        finally:
            self._child(self.rt.metrics.provider_latency, name).observe(
                time.monotonic() - started)
        self.rt.note("sms_provider", True)
        return result

    async def record_provider_opt_out(self, stream: Stream, number: str,
                                      exc: RecipientOptedOut, message_id: str) -> None:
        await asyncio.to_thread(self.rt.optouts.record, OptOutRequest(
            stream.org, "sms", number, method="provider",
            source=f"provider reports recipient opted out (code {exc.code})",
            message_id=message_id, client=exc.provider))
        event(log, "sms_opt_out", org=stream.org, method="provider", provider=exc.provider,
              code=exc.code, to=mask(number))
