"""When a US marketing text may arrive (docs/rulesets.md, `us`, text step 4): 08:00–21:00
where the recipient is, narrower in some states, in every time zone the number may be in.

Pure functions of a phone number and an instant; the zones come from libphonenumber's
time-zone data for the number."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_zones

#: (first hour, end hour) per weekday (Monday 0 … Sunday 6); the end hour is excluded.
FEDERAL = {day: (8, 21) for day in range(7)}
#: Stricter states, by the area codes they hold.
STATE_WINDOWS = {
    "FL": {day: (8, 20) for day in range(7)},
    "OK": {day: (8, 20) for day in range(7)},
    "MD": {day: (8, 20) for day in range(7)},
    "TX": {**{day: (9, 21) for day in range(6)}, 6: (12, 21)},
}
AREA_CODES = {
    "FL": "239 305 321 324 352 386 407 448 561 645 656 689 727 728 754 772 786 813 850 863 "
          "904 941 954",
    "OK": "405 539 572 580 918",
    "MD": "227 240 301 410 443 667",
    "TX": "210 214 254 281 325 346 361 409 430 432 469 512 682 713 726 737 806 817 830 832 "
          "903 915 936 940 945 956 972 979",
}
STATE_OF_AREA_CODE = {code: state for state, codes in AREA_CODES.items()
                      for code in codes.split()}
#: Where nothing narrower is known: every zone of the 50 states.
ALL_US_ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Phoenix",
                "America/Los_Angeles", "America/Anchorage", "America/Adak",
                "Pacific/Honolulu")
#: Zones a US number's candidates are kept from (the states, Puerto Rico and the US Virgin
#: Islands); libphonenumber lists the whole +1 plan (Guam to Bermuda) for a toll-free number.
US_ZONES = frozenset(ALL_US_ZONES) | {
    "America/Detroit", "America/Boise", "America/Juneau", "America/Sitka", "America/Nome",
    "America/Yakutat", "America/Metlakatla", "America/Menominee", "America/North_Dakota/Center",
    "America/North_Dakota/New_Salem", "America/North_Dakota/Beulah",
    "America/Kentucky/Louisville", "America/Kentucky/Monticello",
    "America/Indiana/Indianapolis", "America/Indiana/Knox", "America/Indiana/Tell_City",
    "America/Indiana/Petersburg", "America/Indiana/Vincennes", "America/Indiana/Winamac",
    "America/Indiana/Marengo", "America/Indiana/Vevay", "America/Puerto_Rico",
    "America/St_Thomas"}


@lru_cache(maxsize=4096)
def zones_for(number: str) -> tuple[str, ...]:
    """The US time zones a number may be in (all of them when none is known)."""
    try:
        parsed = phonenumbers.parse(number, "US")
        found = phone_zones.time_zones_for_number(parsed)
    except phonenumbers.NumberParseException:
        found = ()
    zones = tuple(sorted(z for z in found if z in US_ZONES))
    return zones or ALL_US_ZONES


def window_for(number: str) -> dict[int, tuple[int, int]]:
    """The allowed hours per weekday for a number: its state's where stricter, else federal."""
    digits = "".join(c for c in number if c.isdigit())
    if digits.startswith("1") and len(digits) == 11:
        return STATE_WINDOWS.get(STATE_OF_AREA_CODE.get(digits[1:4], ""), FEDERAL)
    return FEDERAL


def _allowed_in(zone: str, window: dict[int, tuple[int, int]], at: datetime) -> bool:
    local = at.astimezone(ZoneInfo(zone))
    first, end = window[local.weekday()]
    return first <= local.hour < end


def next_allowed(number: str, now: datetime) -> datetime | None:
    """None when a text may arrive now; else the first moment it may, in every zone."""
    zones, window = zones_for(number), window_for(number)
    if all(_allowed_in(z, window, now) for z in zones):
        return None
    # The earliest moment inside every window is the start of one of them.
    starts = []
    for zone in zones:
        tz = ZoneInfo(zone)
        today = now.astimezone(tz).date()
        for offset in range(9):
            day = today + timedelta(days=offset)
            first, _ = window[day.weekday()]
            start = datetime.combine(day, time(first), tz)
            if start > now:
                starts.append(start)
    for start in sorted(starts):
        if all(_allowed_in(z, window, start) for z in zones):
            return start.astimezone(now.tzinfo)
    # Unreachable with the zone lists above (they always share hours); never "now".
    return now + timedelta(days=1)  # pragma: no cover
