"""The validation of the new plan settings, as the catalog, the gateway and the CLI share it:
retention rules, hourly and monthly schedules, and locations that would reach a source."""

from __future__ import annotations

import pytest

from timevault.core.retention import TIMEMACHINE, Duration, Rules
from timevault.proto.errors import ServiceError
from timevault.proto.plans import (
    Location,
    Retention,
    Schedule,
    ScheduleUpdate,
    apply_schedule_update,
    describe_retention,
    retention_rules,
    validate_location,
    validate_retention,
    validate_schedule,
)


class refused:
    """``with refused(field):`` the block must raise an ``invalid`` ServiceError naming `field`."""

    def __init__(self, field: str) -> None:
        self.field = field

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        assert isinstance(exc, ServiceError), f"expected a refusal naming {self.field}, got {exc!r}"
        assert (exc.code, exc.field) == ("invalid", self.field), exc.info()
        return True


def test_retention_defaults_and_named_policies() -> None:
    assert validate_retention(None) == Retention(policy="timemachine")
    assert retention_rules(validate_retention(None)) == TIMEMACHINE
    assert retention_rules(validate_retention(Retention(policy="none"))) == Rules()
    assert describe_retention(Retention(policy="none")) == "none"


def test_keep_rules_replace_the_named_policy() -> None:
    custom = validate_retention(Retention(policy="none", keep_last=3, keep_daily=-1, keep_within="1y2w"))
    assert custom.policy == "custom" and custom.keep_within == "1y14d"
    assert retention_rules(custom) == Rules(last=3, daily=-1, within=Duration(years=1, days=14))
    assert describe_retention(custom) == "keep-last 3, keep-daily all, keep-within 1y14d"


@pytest.mark.parametrize(("retention", "field"), [
    (Retention(keep_last=0), "retention.keep_last"),
    (Retention(keep_weekly=-2), "retention.keep_weekly"),
    (Retention(keep_within="forever"), "retention.keep_within"),
    (Retention(keep_within="0d"), "retention.keep_within"),
    (Retention(policy="custom"), "retention.policy"),
])
def test_bad_retention_is_refused_naming_the_field(retention: Retention, field: str) -> None:
    with refused(field):
        validate_retention(retention)


def test_hourly_and_monthly_schedules() -> None:
    hourly = validate_schedule(Schedule(frequency="hourly", time="07", weekday=3, day_of_month=4))
    assert (hourly.time, hourly.weekday, hourly.day_of_month) == (":07", None, None)
    assert validate_schedule(Schedule(frequency="hourly", time="13:45")).time == ":45"  # its minute
    monthly = validate_schedule(Schedule(frequency="monthly", time="02:30", day_of_month=31, weekday=2))
    assert (monthly.day_of_month, monthly.weekday) == (31, None)
    with refused("schedule.day_of_month"):
        validate_schedule(Schedule(frequency="monthly", time="02:30"))
    with refused("schedule.day_of_month"):
        validate_schedule(Schedule(frequency="monthly", time="02:30", day_of_month=32))
    with refused("schedule.time"):
        validate_schedule(Schedule(frequency="hourly", time=":60"))
    with refused("schedule.time"):
        validate_schedule(Schedule(frequency="monthly", time=":30", day_of_month=1))
    # From hourly to daily the start time must be given: ":15" is no time of day.
    with refused("schedule.time"):
        apply_schedule_update(hourly, ScheduleUpdate(frequency="daily"))
    daily = apply_schedule_update(hourly, ScheduleUpdate(frequency="daily", time="04:00"))
    assert (daily.frequency, daily.time) == ("daily", "04:00")


def test_a_location_may_neither_contain_nor_lie_in_a_source() -> None:
    with refused("location.path"):
        validate_location(Location(type="local", path="/home/ana"), ["/home/ana/docs"])
    with refused("location.path"):
        validate_location(Location(type="local", path="/home/ana/docs/.vault"), ["/home/ana/docs"])
    with refused("sources"):  # the sources are what changed (PATCH): they are named
        validate_location(Location(type="local", path="/backups/ana"), ["/backups"], blame="sources")
    ok = validate_location(Location(type="local", path="/backups/ana/"), ["/home/ana/docs", "/home/ana/docs2"])
    assert ok.path == "/backups/ana"
