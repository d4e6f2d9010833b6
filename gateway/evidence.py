"""Validation of incoming evidence records (API JSON or CSV row) into policy Evidence."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .addresses import normalise
from .errors import InvalidAddress, ValidationError
from .policy import BASES, CHANNELS, COLLECTORS, CONTEXTS, Evidence
from .policy.model import RELATIONSHIPS
from .policy.regions import country_code

FIELDS = ("org", "channel", "address", "basis", "obtained_at", "source", "categories",
          "context", "collected_by", "opt_out_offered", "named_orgs",
          # Added in 0.3 for the rule sets beyond the UK (docs/rulesets.md).
          "region", "relationship", "relationship_ended_at", "written", "confirmed_at")
# Evidence can only be of the past. A little slack for clocks that disagree; beyond it a
# date is a typo (2030 for 2023) that would outrank every later opt-out.
FUTURE_SLACK = timedelta(minutes=5)
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def parse_time(value: Any) -> datetime:
    """ISO 8601 with a zone (Z or offset); a time without zone is ambiguous: refused."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected an ISO 8601 time like 2026-01-31T12:00:00Z")
    text = value.strip()
    try:
        when = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; add Z or an offset like +01:00")
    try:
        return when.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"{value!r} is out of the range of dates") from None


def parse_past_time(value: Any, now: datetime | None = None) -> datetime:
    """`parse_time`, refusing times later than now plus `FUTURE_SLACK`."""
    when = parse_time(value)
    limit = (now or datetime.now(UTC)) + FUTURE_SLACK
    if when > limit:
        raise ValueError(f"{value!r} is in the future; evidence records what already "
                         "happened (check the year)")
    return when


def _as_list(value: Any, from_csv: bool) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if from_csv and isinstance(value, str):
        return tuple(v.strip() for v in value.split(";") if v.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise ValueError("expected a list of strings")


def _as_bool(value: Any, from_csv: bool) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if from_csv and isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected true or false")


def _choice(value: Any, options: tuple[str, ...], default: str | None = None) -> str | None:
    if value is None or value == "":
        if default is None:
            raise ValueError(f"required; one of {', '.join(options)}")
        return default
    if value not in options:
        raise ValueError(f"{value!r} is not one of {', '.join(options)}")
    return value


def parse_evidence(
    fields: Mapping[str, Any], regions: Mapping[str, str], *, from_csv: bool = False
) -> Evidence:
    """Check every field of a record; ValidationError names each bad one. `regions`
    maps known org ids to their default phone region."""
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
    check("basis", lambda v: _choice(v, BASES))
    check("obtained_at", parse_past_time)
    check("source", lambda v: _text(v, required=True))
    check("categories", lambda v: _as_list(v, from_csv))
    check("named_orgs", lambda v: _as_list(v, from_csv))
    check("collected_by", lambda v: _choice(v, COLLECTORS, "self"))
    check("context", lambda v: None if v in (None, "") else _choice(v, CONTEXTS))
    check("opt_out_offered", lambda v: _as_bool(v, from_csv))
    check("region", _region)
    check("relationship", lambda v: _choice(v, RELATIONSHIPS, "one_off"))
    check("relationship_ended_at", lambda v: None if v in (None, "") else parse_past_time(v))
    check("written", lambda v: bool(_as_bool(v, from_csv)))
    check("confirmed_at", lambda v: None if v in (None, "") else parse_past_time(v))
    if "channel" in out:
        region = regions.get(out.get("org") or "", "GB")
        check("address", lambda v: normalise(out["channel"], _text(v, required=True), region))
    else:  # which kind of address it must be is unknown; a missing one is still named
        check("address", lambda v: _text(v, required=True))
    if out.get("basis") == "soft_opt_in":
        if not out.get("categories") and "categories" not in errors:
            errors["categories"] = "required for a soft_opt_in: what was bought or asked about"
        if out.get("context") is None and "context" not in errors:
            errors["context"] = f"required for a soft_opt_in; one of {', '.join(CONTEXTS)}"
        if out.get("opt_out_offered") is None and "opt_out_offered" not in errors:
            errors["opt_out_offered"] = "required for a soft_opt_in: true or false"
    if errors:
        raise ValidationError(errors)
    return Evidence(id="", **out)


def _region(value: Any) -> str | None:
    """An ISO 3166-1 alpha-2 country code (any case; stored upper case)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (like DE)")
    return country_code(value)


def _org(value: Any, regions: Mapping[str, str]) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("required: an org id")
    if value not in regions:
        raise ValueError(f"unknown org {value!r}")
    return value


def _text(value: Any, required: bool = False) -> str:
    if value is None:
        if required:
            raise ValueError("required")
        return ""
    if not isinstance(value, str):
        raise TypeError("expected a string")
    if required and not value.strip():
        raise ValueError("required")
    return value
