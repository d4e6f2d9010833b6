"""The double opt-in's confirmation text (gateway/subscriptions.py): a service text of the
org (`templates/confirm_sms.txt.j2`: reply YES, or the link), recorded as a decision and
sent through the configured provider from one of the org's own numbers, so that the
person's YES comes back to a number the gateway knows as the org's."""

from __future__ import annotations

from ..consent import Classification
from ..errors import ValidationError
from ..runtime import Runtime
from ..subscriptions import message_context
from ..templating import render
from .outbound import Relay, new_message_id, stream_senders
from .providers import OutboundSms


class NoSenderNumber(ValidationError):
    """The org has no stream with an `sms_from` number to send the confirmation from."""


def sender_stream(rt: Runtime, org_id: str):
    """The org's stream to send from: a service stream with a number first, else any."""
    streams = [s for s in rt.settings.streams if s.org == org_id and s.sms_from]
    streams.sort(key=lambda s: s.purpose != "service")
    if not streams:
        raise NoSenderNumber({"channel": f"org {org_id!r} has no stream with sms_from to "
                                         "send the confirmation text from; configure one"})
    return streams[0]


def sms_sender(rt: Runtime, relay: Relay):
    """The SMS channel's `ConfirmationSender`."""

    async def send(row: dict, link: str) -> str:
        stream = sender_stream(rt, row["org"])
        org = rt.settings.orgs.get(row["org"])
        from_ = stream_senders(stream.sms_from, org.default_region if org else "GB").default
        body = render("confirm_sms.txt.j2", **message_context(rt.settings, row, link)).strip()
        message_id = new_message_id()
        what = Classification(org=row["org"], stream=stream.id, purpose="service",
                              nature="commercial", category=None)
        verdict = await rt.consent.adecide(what, "sms", row["address"], message_id)
        rt.metrics.decisions.labels("sms", verdict.outcome, verdict.decision.reason).inc()
        await relay.deliver(stream, OutboundSms(row["address"], from_, body, None, message_id),
                            message_id)
        return message_id

    return send
