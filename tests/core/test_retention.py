"""Retention rules as properties over synthetic snapshot times, DST included."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timevault.core.retention import (
    TIMEMACHINE,
    UNLIMITED,
    Duration,
    RetentionError,
    Rules,
    Snapshot,
    apply,
    named_policy,
)

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

snapshot_lists = st.lists(
    st.integers(min_value=0, max_value=3 * 365 * 24 * 60).map(lambda m: EPOCH + timedelta(minutes=m)),
    min_size=0, max_size=60, unique=True,
).map(lambda times: [Snapshot(id=f"s{i:03d}", time=t) for i, t in enumerate(times)])
counts = st.one_of(st.none(), st.integers(min_value=1, max_value=12), st.just(UNLIMITED))
rule_sets = st.builds(Rules, last=counts, hourly=counts, daily=counts, weekly=counts, monthly=counts,
                      yearly=counts)

BUCKETS = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


@given(snapshot_lists, rule_sets, st.sampled_from(ZONES))
@settings(max_examples=300, deadline=None)
def test_rules_keep_what_they_promise(snapshots: list[Snapshot], rules: Rules, zone: str) -> None:
    decisions = apply(snapshots, rules, zone)
    assert sorted(d.snapshot.id for d in decisions) == sorted(s.id for s in snapshots)
    newest_first = sorted(snapshots, key=lambda s: s.time, reverse=True)
    assert [d.snapshot.id for d in decisions] == [s.id for s in newest_first]

    if rules.empty():
        assert all(d.keep for d in decisions)
        return
    if decisions:
        assert decisions[0].keep, "the newest snapshot is always kept"

    if rules.last is not None:
        n = len(decisions) if rules.last == UNLIMITED else rules.last
        assert [d.snapshot.id for d in decisions if "last" in d.reasons] == [s.id for s in newest_first[:n]]

    tz = ZoneInfo(zone)
    for kind, bucket_of in BUCKETS.items():
        count = getattr(rules, kind)
        kept = [d for d in decisions if kind in d.reasons]
        if count is None:
            assert not kept
            continue
        # The newest snapshot of each of the `count` most recent buckets, and nothing else.
        newest_per_bucket: dict[tuple[int, ...], str] = {}
        for s in newest_first:
            newest_per_bucket.setdefault(bucket_of(s.time.astimezone(tz)), s.id)
        expected = list(newest_per_bucket.values())
        if count != UNLIMITED:
            expected = expected[:count]
        assert [d.snapshot.id for d in kept] == expected, kind

    for d in decisions:
        if not d.keep:
            assert d.reasons == []


@given(snapshot_lists, rule_sets, st.sampled_from(ZONES), st.randoms(use_true_random=False))
@settings(max_examples=100, deadline=None)
def test_order_of_input_does_not_matter(snapshots: list[Snapshot], rules: Rules, zone: str,
                                         rnd: random.Random) -> None:
    shuffled = snapshots[:]
    rnd.shuffle(shuffled)
    first = [(d.snapshot.id, d.reasons) for d in apply(snapshots, rules, zone)]
    assert [(d.snapshot.id, d.reasons) for d in apply(shuffled, rules, zone)] == first


@given(snapshot_lists, st.integers(min_value=1, max_value=24 * 400))
@settings(max_examples=100, deadline=None)
def test_within_keeps_exactly_the_recent_ones(snapshots: list[Snapshot], hours: int) -> None:
    decisions = apply(snapshots, Rules(within=Duration(hours=hours)))
    if not decisions:
        return
    newest = decisions[0].snapshot.time
    for d in decisions:
        assert d.keep == (d.snapshot.time >= newest - timedelta(hours=hours))


def test_a_local_day_is_one_bucket_across_the_autumn_change() -> None:
    """Berlin's 25 October 2026 has 25 hours; its first and last half hours are one local day."""
    berlin = ZoneInfo("Europe/Berlin")
    early = datetime(2026, 10, 25, 0, 30, tzinfo=berlin)
    late = datetime(2026, 10, 25, 23, 30, tzinfo=berlin)
    assert late.astimezone(UTC) - early.astimezone(UTC) == timedelta(hours=24)  # 23 h apart on the wall clock
    snaps = [Snapshot("early", early.astimezone(UTC)), Snapshot("late", late.astimezone(UTC))]
    kept = [d.snapshot.id for d in apply(snaps, Rules(daily=UNLIMITED), "Europe/Berlin") if d.keep]
    assert kept == ["late"]
    # In UTC the same two instants fall on two days.
    assert len([d for d in apply(snaps, Rules(daily=UNLIMITED), "UTC") if d.keep]) == 2


def test_spring_forward_gap_hours_are_buckets_of_their_own() -> None:
    new_york = ZoneInfo("America/New_York")
    start = datetime(2026, 3, 8, 0, 0, tzinfo=new_york).astimezone(UTC)
    snaps = [Snapshot(f"s{i}", start + timedelta(minutes=30 * i)) for i in range(8)]  # 00:00 .. 04:30 local
    kept = apply(snaps, Rules(hourly=UNLIMITED), "America/New_York")
    # 4 hours of real time, but local hours 00, 01, 03, 04 (02 does not exist): one per local hour.
    assert len([d for d in kept if d.keep]) == 4


def test_timemachine_thins_a_quarter_of_hourly_backups() -> None:
    newest = datetime(2026, 6, 30, 23, 0, tzinfo=UTC)
    snaps = [Snapshot(f"h{i:05d}", newest - timedelta(hours=i)) for i in range(24 * 90)]
    decisions = apply(snaps, TIMEMACHINE, "UTC")
    kept = [d for d in decisions if d.keep]
    within_day = [d for d in kept if "within 24h" in d.reasons]
    assert len(within_day) == 25  # newest and the 24 hours before it, inclusive
    daily = {d.snapshot.time.date() for d in kept if d.snapshot.time >= newest - timedelta(days=30)}
    assert len(daily) == 31  # one a day for the past month
    older = [d for d in kept if d.snapshot.time < datetime(2026, 5, 30, tzinfo=UTC)]
    weeks = {tuple(d.snapshot.time.isocalendar()[:2]) for d in older}
    assert len(older) == len(weeks) and all("weekly" in d.reasons for d in older)
    assert len(kept) < 80


def test_named_policies_and_bad_input() -> None:
    assert named_policy("timemachine") is TIMEMACHINE
    assert named_policy("none").empty()
    with pytest.raises(RetentionError, match="unknown retention policy"):
        named_policy("forever")
    with pytest.raises(RetentionError, match="positive"):
        Rules(daily=0).check()
    for bad in ["", "7", "d", "0d", "7x", "1d2y", "-3d"]:
        with pytest.raises(RetentionError):
            Duration.parse(bad)


@pytest.mark.parametrize(("text", "expected"), [
    ("24h", Duration(hours=24)), ("2w", Duration(days=14)), ("1y2m3d4h", Duration(1, 2, 3, 4)),
    ("6m", Duration(months=6)),
])
def test_durations(text: str, expected: Duration) -> None:
    assert Duration.parse(text) == expected
    assert Duration.parse(str(expected)) == expected


def test_month_arithmetic_clamps_to_month_end() -> None:
    assert Duration(months=1).before(datetime(2026, 3, 31, 12, tzinfo=UTC)) == datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert Duration(years=1).before(datetime(2028, 2, 29, tzinfo=UTC)) == datetime(2027, 2, 28, tzinfo=UTC)
