"""Retention: which snapshots a plan keeps, and the rule that keeps each one.

A pure function over snapshot times, like restic's ``--keep-*`` rules (restic
``internal/restic/snapshot_policy.go``): snapshots are visited newest first, and a bucketed rule
(hourly, daily, …) keeps the newest snapshot of each of its N most recent buckets that hold a
snapshot. Buckets are wall-clock periods in the plan's time zone, so a day is a local day even
across a daylight-saving change. A snapshot is kept if any rule keeps it; the reasons name every
rule that does.

``timemachine`` is Time Machine's thinning: every snapshot of the last 24 hours, one a day for the
past month, one a week before that (for as long as the repository exists).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from timevault.core.errors import RetentionError

UNLIMITED = -1
"""A bucketed rule's count meaning "every bucket" (restic's ``unlimited``)."""

_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?$")


@dataclass(frozen=True)
class Duration:
    """A calendar duration: years and months count in the calendar, the rest in hours."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse ``1y2m3w4d5h`` (any subset, in that order): y years, m months, w weeks, d days, h hours."""
        match = _DURATION.match(text.strip())
        if not text.strip() or not match:
            raise RetentionError(f"invalid duration {text!r}: use e.g. 24h, 7d, 2w, 6m or 1y (y, m, w, d, h)")
        y, m, w, d, h = (int(g) if g else 0 for g in match.groups())
        if y + m + w + d + h == 0:
            raise RetentionError(f"invalid duration {text!r}: it must be longer than zero")
        if max(y, m, w, d, h) > 100_000:
            raise RetentionError(f"invalid duration {text!r}: too long")
        return cls(years=y, months=m, days=7 * w + d, hours=h)

    def __str__(self) -> str:
        parts = [(self.years, "y"), (self.months, "m"), (self.days, "d"), (self.hours, "h")]
        return "".join(f"{n}{unit}" for n, unit in parts if n) or "0h"

    def before(self, moment: datetime) -> datetime:
        """``moment`` minus this duration (months and years in the calendar, clamped to month ends)."""
        month_index = moment.year * 12 + (moment.month - 1) - (12 * self.years + self.months)
        year, month = divmod(month_index, 12)
        if year < 1:
            return datetime.min.replace(tzinfo=moment.tzinfo)
        day = min(moment.day, _days_in_month(year, month + 1))
        shifted = moment.replace(year=year, month=month + 1, day=day)
        return shifted - timedelta(days=self.days, hours=self.hours)


def _days_in_month(year: int, month: int) -> int:
    nxt = datetime(year + month // 12, month % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day


@dataclass(frozen=True)
class Rules:
    """The ``--keep-*`` rules of one plan. Counts are ``None`` (rule off), a positive number or UNLIMITED."""

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    within: Duration | None = None
    daily_within: Duration | None = None
    """One snapshot a day, for days within this duration of the newest snapshot (used by timemachine)."""

    def empty(self) -> bool:
        """True when no rule is set: then every snapshot is kept."""
        return all(getattr(self, name) is None for name in _RULE_NAMES)

    def check(self) -> Rules:
        for name in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
            value = getattr(self, name)
            if value is not None and (value == 0 or value < UNLIMITED):
                raise RetentionError(f"keep-{name} must be a positive number or -1 (unlimited), not {value}")
        return self


_RULE_NAMES = ("last", "hourly", "daily", "weekly", "monthly", "yearly", "within", "daily_within")

TIMEMACHINE = Rules(within=Duration(hours=24), daily_within=Duration(months=1), weekly=UNLIMITED)
"""Every snapshot of the last 24 hours, one a day for the past month, one a week before that."""


def named_policy(name: str) -> Rules:
    """The rules of a named policy: ``timemachine``, or ``none`` (keep everything)."""
    if name == "timemachine":
        return TIMEMACHINE
    if name == "none":
        return Rules()
    raise RetentionError(f"unknown retention policy {name!r}: use timemachine or none")


def describe(rules: Rules) -> str:
    """The rules as a user writes them: ``timemachine``, ``none`` or ``keep-last 2, keep-daily 7``."""
    if rules == TIMEMACHINE:
        return "timemachine"
    if rules.empty():
        return "none"
    parts = []
    for name in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        value = getattr(rules, name)
        if value is not None:
            parts.append(f"keep-{name} {'unlimited' if value == UNLIMITED else value}")
    if rules.within is not None:
        parts.append(f"keep-within {rules.within}")
    if rules.daily_within is not None:
        parts.append(f"one a day within {rules.daily_within}")
    return ", ".join(parts)


@dataclass(frozen=True)
class Snapshot:
    """What retention needs to know of a snapshot."""

    id: str
    time: datetime
    """When it was taken (timezone-aware)."""


@dataclass
class Decision:
    """Whether a snapshot stays, and which rules keep it (empty when it is forgotten)."""

    snapshot: Snapshot
    reasons: list[str] = field(default_factory=list)

    @property
    def keep(self) -> bool:
        return bool(self.reasons)


def _bucket(kind: str) -> Callable[[datetime], tuple[int, ...]]:
    buckets: dict[str, Callable[[datetime], tuple[int, ...]]] = {
        "hourly": lambda t: (t.year, t.month, t.day, t.hour),
        "daily": lambda t: (t.year, t.month, t.day),
        "weekly": lambda t: tuple(t.isocalendar()[:2]),
        "monthly": lambda t: (t.year, t.month),
        "yearly": lambda t: (t.year,),
    }
    return buckets[kind]


def apply(snapshots: Sequence[Snapshot], rules: Rules, timezone: str = "UTC") -> list[Decision]:
    """Decide for every snapshot; the result is newest first. With no rule set, everything is kept."""
    zone = ZoneInfo(timezone)
    ordered = sorted(snapshots, key=lambda s: (s.time, s.id), reverse=True)
    decisions = [Decision(s) for s in ordered]
    if rules.empty():
        for decision in decisions:
            decision.reasons.append("no retention rule")
        return decisions
    local = [s.time.astimezone(zone) for s in ordered]
    newest = local[0] if local else None

    if rules.last is not None:
        for decision in decisions if rules.last == UNLIMITED else decisions[: rules.last]:
            decision.reasons.append("last")
    if rules.within is not None and newest is not None:
        start = rules.within.before(newest)
        for decision, moment in zip(decisions, local, strict=True):
            if moment >= start:
                decision.reasons.append(f"within {rules.within}")
    for kind in ("hourly", "daily", "weekly", "monthly", "yearly"):
        count = getattr(rules, kind)
        if count is not None:
            _keep_buckets(decisions, local, kind, count, kind)
    if rules.daily_within is not None and newest is not None:
        start = rules.daily_within.before(newest)
        recent = [(d, t) for d, t in zip(decisions, local, strict=True) if t >= start]
        _keep_buckets([d for d, _ in recent], [t for _, t in recent], "daily", UNLIMITED,
                      f"daily within {rules.daily_within}")
    return decisions


def _keep_buckets(decisions: Sequence[Decision], local: Sequence[datetime], kind: str, count: int,
                  reason: str) -> None:
    bucket_of = _bucket(kind)
    last_bucket: tuple[int, ...] | None = None
    kept = 0
    for decision, moment in zip(decisions, local, strict=True):
        if count != UNLIMITED and kept >= count:
            return
        bucket = bucket_of(moment)
        if bucket != last_bucket:
            decision.reasons.append(reason)
            last_bucket = bucket
            kept += 1
