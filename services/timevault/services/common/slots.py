"""Schedule arithmetic: when a daily/weekly plan runs, as pure functions of (schedule, instant).

Slots are wall-clock times in the plan's zone, turned into UTC instants per day:
- a time inside a spring-forward gap (e.g. 02:30 in Berlin on the last Sunday of March) runs at
  the first instant after the gap (03:00 local), since that is when the clock passes the time;
- a time inside an autumn overlap (it happens twice) runs once, at the first occurrence.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from timevault.proto.plans import Schedule

# Every schedule fires at least once a week, so the latest slot is never older than this.
_LOOKBACK = timedelta(days=8)


def slot_on(day: date, schedule: Schedule) -> datetime:
    """The UTC instant of the schedule's wall time on `day` in its zone (gap/overlap rules above)."""
    tz = ZoneInfo(schedule.timezone)
    hour, minute = (int(x) for x in schedule.time.split(":"))
    wall = datetime(day.year, day.month, day.day, hour, minute)
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


def next_run(schedule: Schedule, after: datetime) -> datetime:
    """The first slot strictly after `after` (tz-aware), in UTC."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    local_day = after.astimezone(ZoneInfo(schedule.timezone)).date()
    for offset in range(-1, 16):
        day = local_day + timedelta(days=offset)
        if schedule.frequency == "weekly" and day.isoweekday() != schedule.weekday:
            continue
        slot = slot_on(day, schedule)
        if slot > after:
            return slot
    raise AssertionError("no slot within two weeks")  # unreachable for valid schedules


def latest_due(schedule: Schedule, since: datetime, now: datetime) -> datetime | None:
    """The latest slot in (since, now], or None. Missed slots collapse into this one run."""
    start = max(since, now - _LOOKBACK)
    slot = next_run(schedule, start)
    if slot > now:
        return None
    while (following := next_run(schedule, slot)) <= now:
        slot = following
    return slot
