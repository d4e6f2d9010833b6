"""Quiet hours for US marketing texts (docs/rulesets.md, `us` text step 4), with the clock
given: 08:00–21:00 where the recipient may be, narrower in Florida, Oklahoma, Maryland and
Texas, in every zone libphonenumber gives for the number."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.policy import quiet_hours
from gateway.policy.quiet_hours import next_allowed, zones_for

#: A number per US zone (Alaska's area code spans Anchorage and Adak).
NUMBERS = [
    ("+12125550100", "America/New_York"),
    ("+13125550100", "America/Chicago"),
    ("+13035550100", "America/Denver"),
    ("+16025550100", "America/Phoenix"),
    ("+12135550100", "America/Los_Angeles"),
    ("+18085550100", "Pacific/Honolulu"),
]


def local(zone: str, *args) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC)


@pytest.mark.parametrize(("number", "zone"), NUMBERS)
def test_a_text_may_arrive_from_8_until_21_local_time_in_every_us_zone(number, zone):
    assert zones_for(number) == (zone,)
    # A Wednesday in June and one in January: summer and winter time.
    for month in (6, 1):
        day = 3 if month == 6 else 7
        assert next_allowed(number, local(zone, 2026, month, day, 8, 0)) is None
        assert next_allowed(number, local(zone, 2026, month, day, 20, 59)) is None
        assert next_allowed(number, local(zone, 2026, month, day, 7, 59)) == local(
            zone, 2026, month, day, 8, 0)
        assert next_allowed(number, local(zone, 2026, month, day, 21, 0)) == local(
            zone, 2026, month, day + 1, 8, 0)


def test_an_alaska_number_waits_for_both_of_its_zones():
    assert zones_for("+19075550100") == ("America/Adak", "America/Anchorage")
    # 08:00 in Anchorage is 07:00 on Adak: the text waits an hour more.
    at = local("America/Anchorage", 2026, 6, 3, 8, 0)
    assert next_allowed("+19075550100", at) == local("America/Adak", 2026, 6, 3, 8, 0)


def test_a_multi_zone_area_code_goes_only_when_both_zones_are_inside_the_hours():
    number = "+12085550100"  # Idaho: Boise (Mountain) and the north (Pacific)
    assert zones_for(number) == ("America/Boise", "America/Los_Angeles")
    at = local("America/Boise", 2026, 6, 3, 8, 30)  # 07:30 in Los Angeles
    assert next_allowed(number, at) == local("America/Los_Angeles", 2026, 6, 3, 8, 0)
    # Evening: 21:00 in Boise is 20:00 in Los Angeles; Boise has closed.
    late = local("America/Boise", 2026, 6, 3, 21, 0)
    assert next_allowed(number, late) == local("America/Los_Angeles", 2026, 6, 4, 8, 0)


def test_a_number_of_no_known_zone_waits_for_every_us_zone():
    number = "+18005550100"  # toll-free: libphonenumber lists the whole +1 plan
    assert set(quiet_hours.ALL_US_ZONES) <= set(zones_for(number))
    assert zones_for("not a number") == quiet_hours.ALL_US_ZONES
    # 08:00 in New York is 02:00 in Honolulu; the first moment all agree is 08:00 Honolulu
    # (14:00 in New York: Puerto Rico and the east close at 21:00, still open).
    at = local("America/New_York", 2026, 6, 3, 8, 0)
    assert next_allowed(number, at) == local("Pacific/Honolulu", 2026, 6, 3, 8, 0)


def test_florida_stops_at_20():
    miami = "+13055550100"
    assert next_allowed(miami, local("America/New_York", 2026, 6, 3, 19, 59)) is None
    assert next_allowed(miami, local("America/New_York", 2026, 6, 3, 20, 0)) == local(
        "America/New_York", 2026, 6, 4, 8, 0)
    # New York, same zone, still has an hour.
    assert next_allowed("+12125550100", local("America/New_York", 2026, 6, 3, 20, 0)) is None


def test_oklahoma_and_maryland_stop_at_20_too():
    assert next_allowed("+14055550100", local("America/Chicago", 2026, 6, 3, 20, 0))
    assert next_allowed("+14105550100", local("America/New_York", 2026, 6, 3, 20, 0))


def test_texas_opens_at_9_on_weekdays_and_at_noon_on_sunday():
    dallas = "+12145550100"
    saturday, sunday = 6, 7  # June 2026
    assert next_allowed(dallas, local("America/Chicago", 2026, 6, saturday, 8, 30)) == local(
        "America/Chicago", 2026, 6, saturday, 9, 0)
    assert next_allowed(dallas, local("America/Chicago", 2026, 6, sunday, 11, 0)) == local(
        "America/Chicago", 2026, 6, sunday, 12, 0)
    assert next_allowed(dallas, local("America/Chicago", 2026, 6, sunday, 12, 0)) is None
    # Saturday night waits for Sunday noon, not Sunday 09:00.
    assert next_allowed(dallas, local("America/Chicago", 2026, 6, saturday, 21, 0)) == local(
        "America/Chicago", 2026, 6, sunday, 12, 0)


def test_the_days_the_clocks_change_keep_8_local_time():
    ny = "+12125550100"
    # 8 March 2026: clocks go forward at 02:00; 08:00 EDT is 12:00 UTC.
    assert next_allowed(ny, datetime(2026, 3, 8, 6, 0, tzinfo=UTC)) == datetime(
        2026, 3, 8, 12, 0, tzinfo=UTC)
    # 1 November 2026: clocks go back at 02:00; 08:00 EST is 13:00 UTC.
    assert next_allowed(ny, datetime(2026, 11, 1, 5, 30, tzinfo=UTC)) == datetime(
        2026, 11, 1, 13, 0, tzinfo=UTC)
    # The evening before the change: 21:00 EDT, deferred to 08:00 EST the next morning.
    assert next_allowed(ny, datetime(2026, 11, 1, 1, 0, tzinfo=UTC)) == datetime(
        2026, 11, 1, 13, 0, tzinfo=UTC)
