"""What an inbound text does, whichever provider brought it (webhooks.py verifies first).

| the text is                          | recorded                                 | reply           |
|--------------------------------------|------------------------------------------|-----------------|
| STOP (or any opt-out keyword)        | opt-out of sms for the org owning `To`;  | one confirmation|
|                                      | all orgs ("*") when `To` is unknown      |                 |
| STOPALL                              | opt-out of sms for all orgs ("*")        | one confirmation|
| START, UNSTOP                        | opt-in for the org (lifts its STOP)      | one confirmation|
| HELP, INFO                           | nothing                                  | help text       |
| a keyword whose message id was seen  | nothing (a retried or replayed webhook)  | none            |
| anything else                        | nothing; forwarded to inbound_forward_url| none            |

Decisions:

- The opt-out is stored before anything else happens (reply, forward), so a failure
  after it never loses it.
- START lifts an earlier STOP for the org and channel; it is not consent by itself
  (contract, "No back doors"): nothing says what the person agreed to receive. Evidence
  from before the STOP stays spent (docs/decisions.md); marketing needs evidence
  recorded after the STOP (a new consent, or a new purchase once START has lifted it).
- START to a number no org owns records nothing: there is no org to opt in to, and an
  opt-in for all orgs would lift opt-outs the person gave to each org separately.
- When Twilio's ``OptOutType`` is present, Twilio's opt-out handling has already sent its
  own confirmation, so ours is left out: one confirmation only.
- The sender is stored in E.164 (national numbers read in the owning org's region), so
  it matches the recipient numbers of outbound texts. A sender that is no phone number
  (a short code, a sender id) cannot be sent marketing texts here and records nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ..addresses import mask, normalise_phone
from ..config import Org, Settings
from ..errors import InvalidAddress, StoreUnavailable
from ..logs import event
from ..optouts import OptOutRequest
from ..policy import ALL_ORGS
from ..runtime import Runtime
from ..templating import render
from .keywords import TWILIO_OPT_OUT_TYPES, Keyword, classify, is_confirmation

log = logging.getLogger("gateway.sms.inbound")

METHOD = "sms-keyword"


@dataclass(frozen=True)
class InboundText:
    """One text a person sent to one of our numbers, as the provider reported it."""

    provider: str  # "twilio" | "vonage"
    sender: str  # the person's number, as given
    recipient: str  # our number it was sent to
    body: str
    message_id: str = ""
    opt_out_type: str | None = None  # Twilio's OptOutType

    @property
    def provider_replied(self) -> bool:
        """Twilio's opt-out handling matched a keyword and answered the person itself."""
        return (self.opt_out_type or "").strip().upper() in TWILIO_OPT_OUT_TYPES


@dataclass(frozen=True)
class InboundOutcome:
    """What the text was, and the one text to send back (None: send nothing)."""

    keyword: Keyword | None
    reply: str | None = None
    confirmed: bool = False  # a YES that confirmed a double opt-in

    @property
    def forward(self) -> bool:
        return self.keyword is None and not self.confirmed


def owner_of(settings: Settings, number: str) -> Org | None:
    """The org whose stream sends from `number` (numbers compared in E.164)."""
    direct = settings.org_for_sms_number(number)
    if direct is not None:
        return direct
    wanted = _e164(number, "GB")
    for stream in settings.streams:
        org = settings.orgs.get(stream.org)
        region = org.default_region if org else "GB"
        if any(_e164(sender, region) == wanted for sender in stream.sms_from):
            return org
    return None


def _e164(number: str, region: str) -> str:
    try:
        return normalise_phone(number, region)
    except InvalidAddress:
        return number.strip()


class InboundHandler:
    """Records keyword opt-outs and opt-ins and chooses the reply."""

    def __init__(self, rt: Runtime):
        self.rt = rt

    async def handle(self, text: InboundText) -> InboundOutcome:
        keyword = classify(text.body, text.opt_out_type)
        if keyword is None:
            if is_confirmation(text.body):
                return await self.confirm(text)
            return InboundOutcome(None)
        org = owner_of(self.rt.settings, text.recipient)
        try:
            sender = normalise_phone(text.sender, org.default_region if org else "GB")
        except InvalidAddress:
            event(log, "sms_keyword_ignored", level=logging.WARNING, keyword=keyword,
                  provider=text.provider, problem="sender is not a phone number")
            return InboundOutcome(keyword)
        if keyword is not Keyword.HELP and await self.seen(text, keyword):
            return InboundOutcome(keyword, None)
        if keyword in (Keyword.STOP, Keyword.STOPALL):
            reply = await self.opt_out(text, keyword, sender, org)
        elif keyword is Keyword.START:
            reply = await self.opt_in(text, sender, org)
        else:
            reply = render("sms_help.txt.j2", org_name=org.name if org else "")
            event(log, "sms_help", org=org.id if org else "", provider=text.provider)
        if text.provider_replied:
            reply = None
        return InboundOutcome(keyword, reply.strip() if reply else None)

    async def seen(self, text: InboundText, keyword: Keyword) -> bool:
        """Whether this provider message id was handled already: a webhook retried or
        replayed (Twilio signs no timestamp, so a captured START could otherwise undo a
        later STOP) records nothing new and sends no second confirmation."""
        if not text.message_id:
            return False
        kind = "optin" if keyword is Keyword.START else "optout"
        try:
            found = await asyncio.to_thread(self.rt.ledger.opt_out_for_message,
                                            text.message_id, METHOD, kind)
        except StoreUnavailable:  # the ledger is away: its request id keeps it single
            return False
        if found is not None:
            event(log, "sms_webhook_repeated", level=logging.WARNING, provider=text.provider,
                  message_id=text.message_id)
        return found is not None

    async def opt_out(self, text: InboundText, keyword: Keyword, sender: str,
                      org: Org | None) -> str:
        """STOP: this org (all orgs when unknown); STOPALL: all orgs."""
        scope = org.id if org is not None and keyword is Keyword.STOP else ALL_ORGS
        await asyncio.to_thread(self.rt.optouts.record, OptOutRequest(
            scope, "sms", sender, source=self.source(keyword, text), method=METHOD,
            message_id=text.message_id or None, client=sender,
            request_id=request_id(text, "optout")))
        event(log, "sms_opt_out", org=scope, keyword=keyword, provider=text.provider,
              sender=mask(sender))
        name = org.name if org is not None and scope != ALL_ORGS else ""
        return render("sms_stop_confirmation.txt.j2", org_name=name)

    async def opt_in(self, text: InboundText, sender: str, org: Org | None) -> str | None:
        """START: an opt-in that lifts the org's STOP; no consent (see module docstring)."""
        if org is None:
            event(log, "sms_opt_in_ignored", level=logging.WARNING, provider=text.provider,
                  problem="no org sends from the number written to")
            return None
        await asyncio.to_thread(self.rt.optouts.record, OptOutRequest(
            org.id, "sms", sender, kind="optin", source=self.source(Keyword.START, text),
            method=METHOD, message_id=text.message_id or None, client=sender,
            request_id=request_id(text, "optin")))
        event(log, "sms_opt_in", org=org.id, provider=text.provider, sender=mask(sender))
        return render("sms_start_confirmation.txt.j2", org_name=org.name)

    async def confirm(self, text: InboundText) -> InboundOutcome:
        """YES: confirms the sender's newest pending sign-up by text to the org owning the
        number written to (double opt-in); without one, YES is an ordinary reply."""
        org = owner_of(self.rt.settings, text.recipient)
        subs = self.rt.subscriptions
        if org is None or subs is None:
            return InboundOutcome(None)
        try:
            sender = normalise_phone(text.sender, org.default_region)
        except InvalidAddress:
            return InboundOutcome(None)
        row = await asyncio.to_thread(subs.pending_text, org.id, sender)
        if row is None:
            return InboundOutcome(None)
        evidence_id = await asyncio.to_thread(subs.confirm, row, ip=None, user_agent=None,
                                              via=f"sms-yes:{text.provider}")
        if evidence_id is None:
            return InboundOutcome(None)
        event(log, "subscription_confirmed", org=org.id, channel="sms", via="sms-yes",
              provider=text.provider, sender=mask(sender), evidence_id=evidence_id)
        return InboundOutcome(None, render("sms_confirmed.txt.j2", org_name=org.name).strip(),
                              confirmed=True)

    @staticmethod
    def source(keyword: Keyword, text: InboundText) -> str:
        return f"SMS keyword {keyword.name} to {text.recipient}"


def request_id(text: InboundText, kind: str) -> str | None:
    """A provider's message id as the opt-out's request id: a retried or replayed webhook
    (on any gateway sharing the ledger) records nothing more."""
    return f"sms:{text.provider}:{text.message_id}:{kind}" if text.message_id else None
