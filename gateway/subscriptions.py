"""Consent captured by the gateway: the double opt-in (contract, "Added in 0.3").

A sign-up (`POST /api/v1/subscriptions`) is recorded as *pending*: it is not evidence and
allows nothing. One confirmation message goes to the address (the channel's sender, see
`ConfirmationSenders`), at most once per person within `resend_after` and at most
`max_per_hour` per address. Confirming it (the link's POST, or YES to the text) appends a
`consent` evidence record with `confirmed_at`; the sign-up row keeps the IP, user agent
and means. A link that is forged, unknown, expired (`confirm_within`) or used confirms
nothing.

The clock is this object's `clock` (tests set it)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .addresses import normalise
from .errors import InvalidAddress, TokenError, ValidationError
from .evidence import _as_list, _choice, _org, _region, _text
from .policy import CHANNELS, Evidence
from .tokens import CONFIRM, make_token, token_id_of

FIELDS = ("org", "channel", "address", "source", "wording", "categories", "region")
THROTTLES = ("resend_after", "max_per_hour")

# channel -> async (sign-up row, confirmation link) -> message id: what sends it
ConfirmationSender = Callable[[dict, str], Awaitable[str]]


@dataclass(frozen=True)
class SignUp:
    """A validated sign-up request."""

    org: str
    channel: str
    address: str
    source: str
    wording: str
    categories: tuple[str, ...] = ()
    region: str | None = None


@dataclass(frozen=True)
class Requested:
    """What became of a sign-up: its pending id, and whether a confirmation is to go now
    (`token` set) or not (`throttled` says why)."""

    id: str
    token: str | None
    throttled: str | None = None
    sent_at: str | None = None


def parse_signup(fields: Mapping[str, Any], regions: Mapping[str, str]) -> SignUp:
    """Check every field; ValidationError names each bad one."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for key in fields:
        if key not in FIELDS:
            errors[key] = "unknown field"

    def check(name: str, fn) -> None:
        try:
            out[name] = fn(fields.get(name))
        except (ValueError, TypeError) as exc:
            errors[name] = str(exc)
        except InvalidAddress as exc:
            errors[name] = exc.reason

    check("org", lambda v: _org(v, regions))
    check("channel", lambda v: _choice(v, CHANNELS))
    check("source", lambda v: _text(v, required=True))
    check("wording", lambda v: _text(v, required=True))
    check("categories", lambda v: _as_list(v, False))
    check("region", _region)
    if "channel" in out:
        region = regions.get(out.get("org") or "", "GB")
        check("address", lambda v: normalise(out["channel"], _text(v, required=True), region))
    else:  # which kind of address it must be is unknown; a missing one is still named
        check("address", lambda v: _text(v, required=True))
    if errors:
        raise ValidationError(errors)
    return SignUp(**out)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


class Subscriptions:
    """Pending sign-ups and their confirmation (blocking: call from a thread)."""

    def __init__(self, settings, ledger):
        self.settings = settings
        self.ledger = ledger
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    @property
    def limits(self):
        return self.settings.subscriptions

    def link(self, token: str) -> str:
        return f"{self.settings.http.public_url}/c/{token}"

    def request(self, signup: SignUp, client: str | None) -> Requested:
        """Record a pending sign-up and reserve its confirmation, unless throttled: within
        `resend_after` of the same person's last one the answer is that one's id and
        nothing new; past `max_per_hour` confirmations to the address, the sign-up is
        recorded but nothing is sent (a sign-up whose message was not sent, throttled or
        failed, holds back no later one). Checked and written under the ledger's write
        lock."""
        now = self.clock()
        with self.ledger.exclusive():
            recent = [r for r in self.ledger.subscriptions_for(signup.address, signup.org)
                      if r["channel"] == signup.channel and r["confirmed_at"] is None
                      and r["sent_at"] is not None and r["requested_at"] >= iso(now - timedelta(
                          seconds=self.limits.resend_after))]
            if recent:
                return Requested(recent[-1]["id"], None, "resend_after")
            sent = self.ledger.confirmations_sent(signup.address, iso(now - timedelta(hours=1)))
            token, subscription_id = make_token(self.settings.unsubscribe.secrets[0], CONFIRM)
            throttled = "max_per_hour" if len(sent) >= self.limits.max_per_hour else None
            self.ledger.add_subscription({
                "id": subscription_id, "org": signup.org, "channel": signup.channel,
                "address": signup.address, "source": signup.source, "wording": signup.wording,
                "categories": json.dumps(list(signup.categories)), "region": signup.region,
                "requested_at": iso(now), "requested_by": client,
                "sent_at": None if throttled else iso(now),
                "message_id": None})
        return Requested(subscription_id, None if throttled else token, throttled,
                         None if throttled else iso(now))

    def not_sent(self, subscription_id: str) -> None:
        """The confirmation could not be handed to its channel: it does not count."""
        self.ledger.note_confirmation(subscription_id, sent_at=None, message_id=None)

    def sent(self, subscription_id: str, sent_at: str, message_id: str) -> None:
        self.ledger.note_confirmation(subscription_id, sent_at=sent_at, message_id=message_id)

    def pending(self, token: str) -> dict | None:
        """The sign-up a confirmation link stands for, while it can be confirmed: None
        for a forged, unknown, expired or used link (all alike to the person)."""
        try:
            subscription_id = token_id_of(token, self.settings.unsubscribe.secrets, CONFIRM)
        except TokenError:
            return None
        return self._confirmable(self.ledger.subscription(subscription_id))

    def _confirmable(self, row: dict | None) -> dict | None:
        if row is None or row["confirmed_at"] is not None or row["sent_at"] is None:
            return None
        sent = datetime.fromisoformat(row["sent_at"])
        if self.clock() - sent > timedelta(seconds=self.limits.confirm_within):
            return None
        return row

    def confirm(self, row: dict, *, ip: str | None, user_agent: str | None,
                via: str) -> int | None:
        """Append the consent `row` asked for, confirmed now; its evidence id, or None
        when it was confirmed already (a second click, a race) or has expired since."""
        if self._confirmable(row) is None:
            return None
        now = self.clock()
        evidence = Evidence(
            id="", org=row["org"], channel=row["channel"], address=row["address"],
            basis="consent", obtained_at=now,
            source=f"{row['source']} (double opt-in {row['id']})",
            categories=tuple(row["categories"]), collected_by="self", confirmed_at=now,
            region=row.get("region") or None)
        return self.ledger.confirm_subscription(
            row["id"], evidence, confirmed_ip=ip, confirmed_user_agent=(user_agent or "")[:500],
            confirmed_via=via)

    def pending_text(self, org: str, address: str) -> dict | None:
        """The newest sign-up by text of `address` to `org` that a YES may confirm."""
        rows = [r for r in self.ledger.subscriptions_for(address, org) if r["channel"] == "sms"]
        for row in reversed(rows):
            if self._confirmable(row) is not None:
                return row
        return None


def category_label(settings, org_id: str, categories: list[str]) -> str:
    """What the person signed up for, in the org's own words where it has them."""
    org = settings.orgs.get(org_id)
    names = org.category_names if org else {}
    return ", ".join(dict.fromkeys(names.get(c, c) for c in categories))


def message_context(settings, row: dict, link: str) -> dict:
    """What the confirmation message templates (confirm_email.*, confirm_sms.*) get."""
    org = settings.orgs.get(row["org"])
    return {"org_name": org.name if org else row["org"], "link": link,
            "wording": row["wording"],
            "categories": category_label(settings, row["org"], row["categories"]),
            "valid_days": max(1, settings.subscriptions.confirm_within // 86400)}
