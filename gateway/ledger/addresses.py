"""Address normalisation: one canonical form per person, so lookups match."""

from __future__ import annotations

import functools

import email_validator
import phonenumbers

from ..errors import InvalidAddress


def normalise_email(address: str) -> str:
    """Trimmed, IDNA-encoded domain, lower-cased (addresses match case-insensitively)."""
    candidate = address.strip()
    if not candidate:
        raise InvalidAddress(address, "empty email address")
    try:
        result = email_validator.validate_email(
            candidate, check_deliverability=False, allow_smtputf8=True
        )
    except email_validator.EmailNotValidError as exc:
        raise InvalidAddress(address, str(exc)) from None
    return f"{result.local_part}@{_ascii_domain(result.ascii_domain or result.domain)}".lower()


@functools.lru_cache(maxsize=4096)
def _ascii_domain(domain: str) -> str:
    return domain.lower()


def normalise_phone(number: str, region: str = "GB") -> str:
    """E.164; national numbers are read in `region`. Invalid numbers are refused."""
    candidate = number.strip()
    try:
        parsed = phonenumbers.parse(candidate, region or "GB")
    except phonenumbers.NumberParseException as exc:
        raise InvalidAddress(number, f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidAddress(number, "not a valid phone number (unassigned or fictional range)")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalise(channel: str, address: str, region: str = "GB") -> str:
    """Canonical form of `address` on `channel` ("email" or "sms")."""
    if channel == "email":
        return normalise_email(address)
    if channel == "sms":
        return normalise_phone(address, region)
    raise InvalidAddress(address, f"unknown channel {channel!r}")


def guess_channel(address: str) -> str:
    """`email` for anything with an @, else `sms`."""
    return "email" if "@" in address else "sms"


def mask(address: str) -> str:
    """`j•••@example.com` / `+44•••••••456`: enough to recognise, not to harvest."""
    if "@" in address:
        local, _, domain = address.rpartition("@")
        return f"{local[:1]}•••@{domain}"
    if len(address) > 6:
        return address[:3] + "•" * (len(address) - 6) + address[-3:]
    return "•••"
