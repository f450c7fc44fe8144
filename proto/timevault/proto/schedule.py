"""Scheduler ↔ catalog messages: the schedule table and claiming one slot exactly once."""

from __future__ import annotations

from datetime import datetime

import msgspec

from timevault.proto.jobs import Job
from timevault.proto.plans import Schedule


class ScheduleListRequest(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.schedule.list``."""


class ScheduleEntry(msgspec.Struct, kw_only=True):
    """One plan's schedule state."""

    plan_id: str
    """The plan."""
    schedule: Schedule
    """Its schedule."""
    paused: bool
    """Paused plans do not fire."""
    created_at: datetime
    """Slots before this never fire."""
    last_slot: datetime | None = None
    """The latest slot already fired (UTC); no slot at or before it fires again."""
    resumed_at: datetime | None = None
    """When the schedule was last resumed; slots missed while paused do not fire."""


class ScheduleList(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.schedule.list``."""

    entries: list[ScheduleEntry]
    """All plans."""


class ScheduleFire(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.schedule.fire``: claim `slot` for the plan and start a backup.

    The catalog claims a slot at most once (compare-and-set on ``last_slot``), so with several
    scheduler copies each slot starts one job.
    """

    plan_id: str
    """The plan."""
    slot: datetime
    """The slot (UTC) being fired."""
    scheduler: str = ""
    """Instance id of the asking scheduler (for the log)."""


class ScheduleFireReply(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.schedule.fire``."""

    fired: bool
    """True when this request claimed the slot (a job may still have been refused as busy)."""
    job: Job | None = None
    """The started job."""
    reason: str | None = None
    """Why nothing started: slot already fired, plan paused, plan busy."""
