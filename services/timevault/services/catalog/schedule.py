"""The schedule as the scheduler sees it: each plan's schedule and last fired slot, and firing
a slot (claimed at most once, whichever scheduler copy asks)."""

from __future__ import annotations

from timevault.proto.errors import ServiceError
from timevault.proto.schedule import (
    ScheduleEntry,
    ScheduleFire,
    ScheduleFireReply,
    ScheduleList,
    ScheduleListRequest,
)
from timevault.services.catalog.context import Catalog
from timevault.services.catalog.jobs import Jobs


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
            if not await self.catalog.db.claim_slot(row.id, req.slot):
                return ScheduleFireReply(fired=False, reason="slot already fired")
            try:
                job = await self.jobs.create_backup(tx, row, "schedule", req.slot)
            except ServiceError as exc:
                await tx.event(row.id, "slot_skipped", f"scheduled backup at {req.slot:%Y-%m-%d %H:%M} "
                               f"UTC skipped: {exc.message}")
                return ScheduleFireReply(fired=True, reason=exc.message)
        await self.jobs.dispatch(job)
        return ScheduleFireReply(fired=True, job=job)
