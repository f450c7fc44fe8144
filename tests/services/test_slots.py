"""`next_run` / `latest_due`: daily, weekly, time zones, DST gaps and overlaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timevault.proto.plans import Schedule
from timevault.services.common.slots import latest_due, next_run

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def daily(time: str, tz: str = "UTC") -> Schedule:
    return Schedule(frequency="daily", time=time, timezone=tz)


def weekly(day: int, time: str, tz: str = "UTC") -> Schedule:
    return Schedule(frequency="weekly", time=time, weekday=day, timezone=tz)


def test_daily_same_day_and_next_day() -> None:
    s = daily("09:00")
    assert next_run(s, utc(2026, 5, 1, 8, 0)) == utc(2026, 5, 1, 9, 0)
    assert next_run(s, utc(2026, 5, 1, 9, 0)) == utc(2026, 5, 2, 9, 0)  # strictly after
    assert next_run(s, utc(2026, 5, 1, 9, 1)) == utc(2026, 5, 2, 9, 0)


def test_daily_in_zone() -> None:
    s = daily("09:00", "Europe/Berlin")
    assert next_run(s, utc(2026, 1, 10, 0, 0)) == utc(2026, 1, 10, 8, 0)  # CET
    assert next_run(s, utc(2026, 7, 10, 0, 0)) == utc(2026, 7, 10, 7, 0)  # CEST


def test_weekly() -> None:
    s = weekly(1, "06:30", "America/New_York")  # Mondays
    run = next_run(s, utc(2026, 5, 6, 12))  # a Wednesday
    local = run.astimezone(NEW_YORK)
    assert (local.isoweekday(), local.hour, local.minute) == (1, 6, 30)
    assert local.date().isoformat() == "2026-05-11"
    assert next_run(s, run) - run == timedelta(days=7)


def test_weekly_sunday_local_is_saturday_utc() -> None:
    s = weekly(7, "00:30", "Asia/Tokyo")  # Sunday 00:30 JST = Saturday 15:30 UTC
    run = next_run(s, utc(2026, 5, 1))
    assert run == utc(2026, 5, 2, 15, 30)


def test_berlin_spring_forward_gap_runs_when_the_clock_passes() -> None:
    s = daily("02:30", "Europe/Berlin")  # 2026-03-29 02:00 CET → 03:00 CEST
    run = next_run(s, utc(2026, 3, 28, 12))
    assert run == utc(2026, 3, 29, 1, 0)
    assert run.astimezone(BERLIN).strftime("%H:%M") == "03:00"
    assert next_run(s, run) == utc(2026, 3, 30, 0, 30)  # normal again: 02:30 CEST


def test_berlin_fall_back_overlap_runs_once() -> None:
    s = daily("02:30", "Europe/Berlin")  # 2026-10-25 03:00 CEST → 02:00 CET, 02:30 twice
    first = next_run(s, utc(2026, 10, 24, 12))
    assert first == utc(2026, 10, 25, 0, 30)  # the first 02:30 (CEST)
    second = next_run(s, first)
    assert second == utc(2026, 10, 26, 1, 30)  # not the repeated 02:30 CET on the 25th


def test_new_york_dst_both_ways() -> None:
    s = daily("02:15", "America/New_York")
    spring = next_run(s, utc(2026, 3, 8, 0))  # 02:00 EST → 03:00 EDT
    assert spring.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M") == "2026-03-08 03:00"
    fall = next_run(s, utc(2026, 11, 1, 0))  # 02:00 EDT → 01:00 EST; 02:15 exists once (EST)
    assert fall.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M %Z") == "2026-11-01 02:15 EST"
    s1 = daily("01:30", "America/New_York")  # 01:30 happens twice on 2026-11-01
    first = next_run(s1, utc(2026, 11, 1, 0))
    assert first == utc(2026, 11, 1, 5, 30)  # EDT
    assert next_run(s1, first).astimezone(NEW_YORK).date().isoformat() == "2026-11-02"


def test_wall_time_is_kept_across_dst() -> None:
    s = daily("09:00", "Europe/Berlin")
    t = utc(2026, 3, 20)
    for _ in range(20):
        t = next_run(s, t)
        assert t.astimezone(BERLIN).strftime("%H:%M") == "09:00"


def test_latest_due_collapses_missed_slots() -> None:
    s = daily("03:00")
    since = utc(2026, 5, 1, 4)  # last fired the 1st
    now = utc(2026, 5, 5, 12)  # down for four days
    assert latest_due(s, since, now) == utc(2026, 5, 5, 3)
    assert latest_due(s, utc(2026, 5, 5, 3), now) is None
    assert latest_due(s, since, utc(2026, 5, 2, 2, 59)) is None


def test_latest_due_after_months_of_downtime() -> None:
    s = weekly(3, "22:00", "Europe/Berlin")
    due = latest_due(s, utc(2025, 1, 1), utc(2026, 5, 1, 12))
    assert due is not None and due.astimezone(BERLIN).isoweekday() == 3
    assert utc(2026, 4, 24) < due < utc(2026, 5, 1, 12)


@settings(max_examples=300, deadline=None)
@given(
    after=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    tz=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]),
    weekday=st.one_of(st.none(), st.integers(1, 7)),
)
def test_next_run_properties(after: datetime, hour: int, minute: int, tz: str, weekday: int | None) -> None:
    s = Schedule(frequency="weekly" if weekday else "daily", time=f"{hour:02d}:{minute:02d}", weekday=weekday,
                 timezone=tz)
    run = next_run(s, after)
    assert run > after
    assert run - after <= timedelta(days=8)
    local = run.astimezone(ZoneInfo(tz))
    if weekday:
        assert local.isoweekday() == weekday
    # Either the wall time itself, or the first instant after a gap that swallowed it.
    if (local.hour, local.minute) != (hour, minute):
        before = (run - timedelta(minutes=1)).astimezone(ZoneInfo(tz))
        assert before.utcoffset() != local.utcoffset()
    # No slot is skipped: nothing in (after, run) is a slot.
    assert next_run(s, run - timedelta(seconds=1)) == run


def test_naive_after_is_refused() -> None:
    with pytest.raises(ValueError):
        next_run(daily("01:00"), datetime(2026, 1, 1))


# --- hourly and monthly -------------------------------------------------------------------------


def hourly(minute: str, tz: str = "UTC") -> Schedule:
    return Schedule(frequency="hourly", time=minute, timezone=tz)


def monthly(day: int, time: str, tz: str = "UTC") -> Schedule:
    return Schedule(frequency="monthly", time=time, day_of_month=day, timezone=tz)


def test_hourly_runs_every_hour_at_its_minute() -> None:
    s = hourly(":15")
    assert next_run(s, utc(2026, 5, 1, 10, 20)) == utc(2026, 5, 1, 11, 15)
    assert next_run(s, utc(2026, 5, 1, 10, 15)) == utc(2026, 5, 1, 11, 15)  # strictly after
    assert next_run(s, utc(2026, 5, 1, 23, 59)) == utc(2026, 5, 2, 0, 15)
    kolkata = hourly(":00", "Asia/Kolkata")  # UTC+05:30: the local hour starts at :30 UTC
    assert next_run(kolkata, utc(2026, 5, 1, 10, 0)) == utc(2026, 5, 1, 10, 30)


def test_hourly_across_the_spring_forward_gap() -> None:
    s = hourly(":30", "Europe/Berlin")  # 2026-03-29: 02:00 CET → 03:00 CEST, 02:30 never exists
    runs = [next_run(s, utc(2026, 3, 29, 0, 0))]
    for _ in range(3):
        runs.append(next_run(s, runs[-1]))
    local = [r.astimezone(BERLIN).strftime("%H:%M %Z") for r in runs]
    assert local == ["01:30 CET", "03:00 CEST", "03:30 CEST", "04:30 CEST"]


def test_hourly_across_the_fall_back_overlap_runs_the_repeated_hour_once() -> None:
    s = hourly(":30", "Europe/Berlin")  # 2026-10-25: 03:00 CEST → 02:00 CET, 02:30 happens twice
    runs = [next_run(s, utc(2026, 10, 24, 23, 0))]
    for _ in range(3):
        runs.append(next_run(s, runs[-1]))
    assert [r.astimezone(BERLIN).strftime("%H:%M %Z") for r in runs] == [
        "01:30 CEST", "02:30 CEST", "03:30 CET", "04:30 CET"]
    assert runs[2] - runs[1] == timedelta(hours=2)


def test_monthly_on_a_day_and_on_the_last_day_of_short_months() -> None:
    s = monthly(31, "09:00")
    assert next_run(s, utc(2026, 1, 1)) == utc(2026, 1, 31, 9)
    assert next_run(s, utc(2026, 1, 31, 9)) == utc(2026, 2, 28, 9)  # February has no 31st
    assert next_run(s, utc(2026, 2, 28, 9)) == utc(2026, 3, 31, 9)
    assert next_run(s, utc(2026, 4, 1)) == utc(2026, 4, 30, 9)
    assert next_run(monthly(29, "09:00"), utc(2028, 2, 1)) == utc(2028, 2, 29, 9)  # leap year
    assert next_run(monthly(29, "09:00"), utc(2027, 2, 1)) == utc(2027, 2, 28, 9)
    first = monthly(1, "00:30", "America/New_York")
    assert next_run(first, utc(2026, 5, 1, 12)).astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M") == "2026-06-01 00:30"


def test_monthly_in_a_spring_forward_gap() -> None:
    s = monthly(8, "02:15", "America/New_York")  # 2026-03-08 02:00 EST → 03:00 EDT
    run = next_run(s, utc(2026, 3, 1))
    assert run.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M") == "2026-03-08 03:00"
    assert next_run(s, run).astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M") == "2026-04-08 02:15"


def test_latest_due_collapses_missed_hourly_and_monthly_slots() -> None:
    assert latest_due(hourly(":05"), utc(2026, 5, 1, 3), utc(2026, 5, 3, 17, 30)) == utc(2026, 5, 3, 17, 5)
    assert latest_due(hourly(":05"), utc(2026, 5, 3, 17, 5), utc(2026, 5, 3, 18, 4)) is None
    # Down for three months: the missed monthly runs are one run, on the last one's day.
    due = latest_due(monthly(31, "03:00"), utc(2026, 1, 1), utc(2026, 5, 2))
    assert due == utc(2026, 4, 30, 3)
    assert latest_due(monthly(31, "03:00"), utc(2026, 4, 30, 3), utc(2026, 5, 30)) is None


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(after=instants, minute=st.integers(0, 59), tz=st.sampled_from(ZONES))
def test_hourly_properties(after: datetime, minute: int, tz: str) -> None:
    s = hourly(f":{minute:02d}", tz)
    run = next_run(s, after)
    assert after < run <= after + timedelta(hours=2)
    local = run.astimezone(ZoneInfo(tz))
    if local.minute != minute:  # only when a gap swallowed the wall time: runs at the gap's end
        before = (run - timedelta(minutes=1)).astimezone(ZoneInfo(tz))
        assert before.utcoffset() != local.utcoffset()
    assert next_run(s, run - timedelta(seconds=1)) == run  # nothing in (after, run) is a slot
    following = next_run(s, run)
    assert timedelta(minutes=30) <= following - run <= timedelta(hours=2)
    due = latest_due(s, after - timedelta(days=3), run)
    assert due == run


@settings(max_examples=300, deadline=None)
@given(after=instants, day=st.integers(1, 31), hour=st.integers(0, 23), minute=st.integers(0, 59),
       tz=st.sampled_from(ZONES))
def test_monthly_properties(after: datetime, day: int, hour: int, minute: int, tz: str) -> None:
    import calendar

    s = monthly(day, f"{hour:02d}:{minute:02d}", tz)
    run = next_run(s, after)
    assert after < run <= after + timedelta(days=32)
    local = run.astimezone(ZoneInfo(tz))
    expected_day = min(day, calendar.monthrange(local.year, local.month)[1])
    if (local.day, local.hour, local.minute) != (expected_day, hour, minute):
        before = (run - timedelta(minutes=1)).astimezone(ZoneInfo(tz))
        assert before.utcoffset() != local.utcoffset()  # a gap swallowed the wall time
        assert local.day in (expected_day, expected_day + 1)
    assert next_run(s, run - timedelta(seconds=1)) == run
    assert latest_due(s, after, run) == run
    assert latest_due(s, run, run + timedelta(days=27)) is None
