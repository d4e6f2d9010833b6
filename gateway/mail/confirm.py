"""The double opt-in's confirmation email (gateway/subscriptions.py): a service message of
the org, built from `templates/confirm_email.*`, recorded as a decision and spooled like
every other copy, so it leaves by the gateway's own delivery path (retries, bounces, the
upstream) and a crash after the API's 202 loses nothing."""

from __future__ import annotations

import email.policy
from collections.abc import Callable
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ..consent import Classification
from ..ledger.spool import Copy, Spool
from ..ledger.writer import Writes
from ..runtime import Runtime
from ..subscriptions import message_context
from ..templating import render

POLICY = email.policy.SMTP


def sender_address(rt: Runtime) -> str:
    return rt.settings.subscriptions.mail_from or \
        f"confirm@{rt.settings.unsubscribe.mailto_domain}"


def build_confirmation(rt: Runtime, row: dict, link: str) -> tuple[str, bytes]:
    """(Message-ID, the message) of the confirmation for sign-up `row`."""
    context = message_context(rt.settings, row, link)
    msg = EmailMessage(policy=POLICY)
    local, _, domain = sender_address(rt).partition("@")
    msg["From"] = Address(context["org_name"], local, domain)
    msg["To"] = row["address"]
    msg["Subject"] = render("confirm_email.subject.txt.j2", **context).strip()
    msg["Date"] = formatdate(localtime=False)
    message_id = make_msgid(domain=rt.settings.smtp.hostname)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    msg.set_content(render("confirm_email.txt.j2", **context))
    msg.add_alternative(render("confirm_email.html.j2", **context), subtype="html")
    data = msg.as_bytes(policy=POLICY)
    if rt.dkim is not None:
        data = rt.dkim.sign(data)
    return message_id, data


def email_sender(rt: Runtime, spool: Spool, wake: Callable[[], None]):
    """The email channel's `ConfirmationSender`: the service decision and the copy are
    committed together (the writer), then delivery is woken."""

    async def send(row: dict, link: str) -> str:
        message_id, data = build_confirmation(rt, row, link)
        what = Classification(org=row["org"], stream=None, purpose="service",
                              nature="commercial", category=None)
        decision = (await rt.consent.aassess(what, "email", row["address"]))[0]  # service
        copy = Copy("confirm", "", row["address"], data, message_id, None, row["org"])
        written = await rt.writer.write(Writes(
            decisions=[rt.consent.entry(what, "email", row["address"], decision, message_id)],
            spool=spool, copies=[copy]))
        outcome = rt.consent.verdict(decision, written.decision_ids[0]).outcome
        rt.metrics.decisions.labels("email", outcome, decision.reason).inc()
        wake()
        return message_id

    return send
