"""The schedule as the scheduler sees it: each plan's schedule and last fired slot, and firing
a slot (claimed at most once, whichever scheduler copy asks)."""

from __future__ import annotations

import functools
from datetime import datetime

from timevault.proto.errors import ServiceError
from timevault.proto.plans import Schedule
from timevault.proto.schedule import (
    ScheduleEntry,
    ScheduleFire,
    ScheduleFireReply,
    ScheduleList,
    ScheduleListRequest,
)
from timevault.services.catalog.context import Catalog, Transaction
from timevault.services.catalog.db import PlanRow
from timevault.services.catalog.jobs import Jobs
from timevault.services.common.slots import next_run

MISSED_COUNT_MAX = 1000


class Scheduling:
    def __init__(self, catalog: Catalog, jobs: Jobs) -> None:
        self.catalog = catalog
        self.jobs = jobs

    async def list_entries(self, _req: ScheduleListRequest) -> ScheduleList:
        return ScheduleList(entries=[
            ScheduleEntry(plan_id=row.id, schedule=row.schedule, paused=row.paused, created_at=row.created_at,
                          last_slot=row.last_slot, resumed_at=row.resumed_at)
            for row in await self.catalog.db.list_plans() if not row.deleting
        ])

    async def fire(self, req: ScheduleFire) -> ScheduleFireReply:
        """Claim the slot and create its backup in one transaction; a busy plan skips the slot."""
        async with self.catalog.transaction() as tx:
            row = await self.catalog.plan(req.plan_id)
            if row.paused:
                return ScheduleFireReply(fired=False, reason="plan is paused")
            since = max(t for t in (row.created_at, row.last_slot, row.resumed_at) if t is not None)
            if not await self.catalog.db.claim_slot(row.id, req.slot):
                return ScheduleFireReply(fired=False, reason="slot already fired")
            missed, latest_missed = missed_slots(row.schedule, since, req.slot)
            if missed and latest_missed is not None:
                text = (f"{missed} scheduled backup{'s' if missed > 1 else ''} did not run while TimeVault "
                        f"was not running (the latest at {latest_missed:%Y-%m-%d %H:%M} UTC)")
                await tx.event(row.id, "slot_missed", text)
                self._tell_missed(tx, row, latest_missed, missed, text)
            try:
                job = await self.jobs.create_backup(tx, row, "schedule", req.slot)
            except ServiceError as exc:
                await tx.event(row.id, "slot_skipped", f"scheduled backup at {req.slot:%Y-%m-%d %H:%M} "
                               f"UTC skipped: {exc.message}")
                self._tell_missed(tx, row, req.slot, 1, f"skipped: {exc.message}")
                return ScheduleFireReply(fired=True, reason=exc.message)
        await self.jobs.dispatch(job)
        return ScheduleFireReply(fired=True, job=job)

    def _tell_missed(self, tx: Transaction, row: PlanRow, slot: datetime, count: int, reason: str) -> None:
        for listener in self.catalog.slot_missed:
            tx.after(functools.partial(listener, row, slot, count, reason))


def missed_slots(schedule: Schedule, since: datetime, slot: datetime) -> tuple[int, datetime | None]:
    """(how many slots lie strictly between `since` and `slot`, the latest of them)."""
    count, latest = 0, None
    current = next_run(schedule, since)
    while current < slot and count < MISSED_COUNT_MAX:
        count, latest = count + 1, current
        current = next_run(schedule, current)
    return count, latest
