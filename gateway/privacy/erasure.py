"""Erasure of one person (`gateway erase`, `POST /api/v1/erasures`): every record of theirs
in the ledger, their copies in the local spool and their deferred texts go; one suppression
entry (keyed hash, org scope, time, source) stays, so they are never marketed to again
until they give specific consent anew (reason `erased`). See docs/privacy.md."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from ..addresses import mask, normalise
from ..errors import InvalidAddress, ValidationError
from ..logs import event
from ..mail.dsn import erased_notice
from ..policy import ALL_ORGS, CHANNELS

log = logging.getLogger("gateway.privacy")

FIELDS = ("channel", "address", "org", "source")


@dataclass(frozen=True)
class ErasureRequest:
    """Who is to be erased (normalised address), for which org ("*": all), on whose word."""

    channel: str
    address: str
    org: str
    source: str


def parse_erasure(body: dict, regions: dict[str, str]) -> ErasureRequest:
    """An erasure request from the API's JSON (or the CLI's arguments): ValidationError
    naming every bad field. The source is kept for good, so it must not hold the address."""
    errors: dict[str, str] = {}
    for key in body:
        if key not in FIELDS:
            errors[key] = "unknown field"
    channel, org, source = body.get("channel"), body.get("org"), body.get("source")
    if channel not in CHANNELS:
        errors["channel"] = "one of email, sms"
    if not isinstance(org, str) or not org:
        errors["org"] = 'required: an org id (or "*" for every org)'
    elif org != ALL_ORGS and org not in regions:
        errors["org"] = f"unknown org {org!r}"
    address, normalised = body.get("address"), ""
    if not isinstance(address, str) or not address.strip():
        errors["address"] = "required"
    elif channel in CHANNELS:
        try:
            normalised = normalise(channel, address, regions.get(org or "", "GB"))
        except InvalidAddress as exc:
            errors["address"] = exc.reason
    if not isinstance(source, str) or not source.strip():
        errors["source"] = "required: who asked, and how (kept with the suppression entry)"
    elif address and normalised and _names(source, address, normalised):
        errors["source"] = "must not contain the address (it is kept after the erasure)"
    if errors:
        raise ValidationError(errors)
    return ErasureRequest(channel, normalised, org, source.strip())


def _names(text: str, *addresses: str) -> bool:
    folded = text.casefold()
    digits = "".join(c for c in text if c.isdigit())
    for a in addresses:
        a = a.strip().casefold()
        if a and a in folded:
            return True
        number = "".join(c for c in a if c.isdigit())
        if "@" not in a and len(number) >= 6 and number[-9:] in digits:
            return True
    return False


class Erasures:
    """Erases people: the ledger (one transaction), then the opt-outs kept in data_dir
    during a ledger outage, the local spools, then the deferred texts. `spools` gives the
    spools this process can reach."""

    def __init__(self, ledger, consent, spools: Callable[[], Iterable] = tuple,
                 texts: Callable[[], object | None] = lambda: None,
                 pending: Callable[[], object | None] = lambda: None):
        self.ledger = ledger
        self.consent = consent
        self.spools = spools
        self.texts = texts  # the deferred texts (gateway/ledger/deferred.py), if any
        # The opt-outs kept in data_dir during a ledger outage (gateway/ledger/pending.py);
        # those another gateway keeps are dropped when it replays them (gateway/optouts.py).
        self.pending = pending
        self._notice = partial(erased_notice, consent.settings.smtp.hostname)

    def erase(self, request: ErasureRequest) -> dict:
        """Erase (blocking: call it in a thread); the answer, with counts of what went."""
        suppressed_as = self.consent.suppression.of(request.channel, request.address)
        done = self.ledger.erase(request.channel, request.address, request.org,
                                 suppressed_as, request.source)
        removed = dict(done.removed)
        kept = self.pending()
        if kept is not None:  # the person's opt-outs not yet written count as opt-outs
            removed["opt_outs"] = removed.get("opt_outs", 0) + kept.erase(
                request.channel, request.address, request.org)
        removed["copies"] = sum(spool.erase(request.address, request.org, self._notice)
                                for spool in self.spools()) if request.channel == "email" else 0
        held = self.texts() if request.channel == "sms" else None
        removed["deferred_texts"] = held.erase_texts(
            request.address, None if request.org == ALL_ORGS else request.org) if held else 0
        event(log, "erased", org=request.org, channel=request.channel,
              address=mask(request.address), erasure_id=done.suppression_id,
              new=done.new, **removed)
        return {"erasure_id": done.suppression_id, "new": done.new, "at": done.at,
                "org": request.org, "channel": request.channel, "source": request.source,
                "removed": removed}
