"""Address normalisation: one canonical form per person, so lookups match."""

from __future__ import annotations

import functools
import re

import email_validator
import phonenumbers

from .errors import InvalidAddress

# RFC 5322 dot-atom in ASCII: a local part of this shape is one email_validator accepts
# unchanged, so for it only the domain needs the full check, done once per domain.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_LOCAL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_MAX_LOCAL, _MAX_ADDRESS = 64, 254


def normalise_email(address: str) -> str:
    """Trimmed, IDNA-encoded domain, lower-cased (addresses match case-insensitively)."""
    candidate = address.strip()
    if not candidate:
        raise InvalidAddress(address, "empty email address")
    # Fast path for bulk imports; anything unusual (or invalid) gets the full validator,
    # so results and error messages are those of email_validator either way.
    local, at, domain = candidate.rpartition("@")
    if at and len(local) <= _MAX_LOCAL and _PLAIN_LOCAL.fullmatch(local):
        ascii_domain, longest = _valid_domain(domain)
        if ascii_domain and len(local) + 1 + longest <= _MAX_ADDRESS:
            return f"{local}@{ascii_domain}".lower()
    return _validated_email(address, candidate)


def _validated_email(address: str, candidate: str) -> str:
    """The full check of email_validator, for any address."""
    try:
        result = email_validator.validate_email(
            candidate, check_deliverability=False, allow_smtputf8=True
        )
    except email_validator.EmailNotValidError as exc:
        raise InvalidAddress(address, str(exc)) from None
    return f"{result.local_part}@{result.ascii_domain or result.domain}".lower()


@functools.lru_cache(maxsize=65536)
def _valid_domain(domain: str) -> tuple[str | None, int]:
    """The lower-cased ASCII (IDNA) form of `domain` (None when it is not valid), and the
    UTF-8 length of its longest form (as given, normalised, ASCII), which email_validator
    counts toward the 254-octet limit of the whole address."""
    try:
        result = email_validator.validate_email(
            f"a@{domain}", check_deliverability=False, allow_smtputf8=True
        )
    except email_validator.EmailNotValidError:
        return None, 0
    ascii_domain = result.ascii_domain or result.domain
    forms = (domain, result.domain, ascii_domain)
    return ascii_domain.lower(), max(len(f.encode("utf-8")) for f in forms)


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
