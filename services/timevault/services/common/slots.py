"""Schedule arithmetic: when a plan runs, as pure functions of (schedule, instant).

Slots are wall-clock times in the plan's zone, turned into UTC instants per local day:
- hourly: every hour at minute MM (``:MM``); daily: once at HH:MM; weekly: on one day of the
  week; monthly: on one day of the month, or on the month's last day when it has no such day
  (the 31st runs on 30 April and 28 or 29 February);
- a time inside a spring-forward gap (e.g. 02:30 in Berlin on the last Sunday of March) runs at
  the first instant after the gap (03:00 local), since that is when the clock passes the time;
- a time inside an autumn overlap (it happens twice) runs once, at the first occurrence.
For hourly schedules the same two rules hold for each hour: the hour the clock skips runs at
the end of the gap (once, together with the next hour's slot when they fall on one instant),
the hour it repeats runs once.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from timevault.proto.plans import Schedule

# Every schedule has a slot within this many days of any instant (monthly: 31 days apart at most).
_HORIZON = 63


def slot_on(day: date, schedule: Schedule, hour: int | None = None) -> datetime:
    """The UTC instant of the schedule's wall time on `day` in its zone (gap/overlap rules above).

    `hour` overrides the hour of ``HH:MM`` (hourly schedules, whose time is ``:MM``)."""
    tz = ZoneInfo(schedule.timezone)
    hh, mm = schedule.time.split(":")
    wall = datetime(day.year, day.month, day.day, int(hh) if hour is None else hour, int(mm))
    first = wall.replace(tzinfo=tz, fold=0)
    utc = first.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) == wall:
        return utc  # exists (the earlier one when it exists twice)
    # Nonexistent wall time: walk from the post-gap reading up to the first instant at/after it.
    candidate = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    while candidate.astimezone(tz).replace(tzinfo=None) < wall:
        candidate += timedelta(minutes=1)
    # Transitions fall on whole minutes in every zone in use, so this is the transition instant.
    return candidate


def slots_on(day: date, schedule: Schedule) -> list[datetime]:
    """The schedule's slots on one local day, in order."""
    if schedule.frequency == "hourly":
        return sorted({slot_on(day, schedule, hour) for hour in range(24)})
    if schedule.frequency == "weekly" and day.isoweekday() != schedule.weekday:
        return []
    if schedule.frequency == "monthly":
        last = calendar.monthrange(day.year, day.month)[1]
        if day.day != min(schedule.day_of_month or 1, last):
            return []
    return [slot_on(day, schedule)]


def next_run(schedule: Schedule, after: datetime) -> datetime:
    """The first slot strictly after `after` (tz-aware), in UTC."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    local_day = after.astimezone(ZoneInfo(schedule.timezone)).date()
    for offset in range(-1, _HORIZON):
        for slot in slots_on(local_day + timedelta(days=offset), schedule):
            if slot > after:
                return slot
    raise AssertionError("no slot within two months")  # unreachable for valid schedules


def latest_due(schedule: Schedule, since: datetime, now: datetime) -> datetime | None:
    """The latest slot in (since, now], or None. Missed slots collapse into this one run."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    local_day = now.astimezone(ZoneInfo(schedule.timezone)).date()
    for offset in range(1, -_HORIZON, -1):
        due = [slot for slot in slots_on(local_day + timedelta(days=offset), schedule) if slot <= now]
        if due:
            return due[-1] if due[-1] > since else None
    return None
