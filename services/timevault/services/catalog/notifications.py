"""When the catalog notifies, and what: failed or canceled jobs, missed or skipped scheduled slots,
and (opted in) completed jobs. Delivery is `notify.Notifier`'s.

The catalog decides because it sees every outcome: a job's end (`Jobs.record_end`), a slot
skipped while the plan is busy, and slots that passed while nothing was running (counted when
the next slot fires, `schedule.missed_slots`). Both are announced after their commit
(`Catalog.job_ended`, `Catalog.slot_missed`). The delivery's outcome is kept as the plan's
``notify_last``.
"""

from __future__ import annotations

import logging
from datetime import datetime

import msgspec

from timevault.proto.jobs import Job
from timevault.proto.notify import Notification, NotifyPlan
from timevault.proto.plans import NotifyDelivery, SnapshotInfo
from timevault.services.catalog.context import Catalog
from timevault.services.catalog.db import PlanRow
from timevault.services.catalog.notify import Notifier
from timevault.services.catalog.plan_options import OptionsStore
from timevault.services.common.util import utcnow

log = logging.getLogger(__name__)


class Notifications:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.options = OptionsStore(catalog.db)
        self.notifier = Notifier(catalog.options.notify)
        catalog.job_ended.append(self.job_ended)
        catalog.slot_missed.append(self.slot_missed)

    async def close(self) -> None:
        await self.notifier.close()

    async def job_ended(self, job: Job, snapshot: SnapshotInfo | None) -> None:
        """After a backup, restore or prune ended: failures and cancels always, successes of backups
        and restores when asked for."""
        if job.status not in ("completed", "failed", "canceled"):
            return
        if job.kind == "prune" and job.status == "completed":
            return  # one follows every backup: only a prune that failed is news
        row = await self.catalog.db.get_plan(job.plan_id)
        if row is None:
            return
        done = snapshot is not None and job.status == "completed"
        note = Notification(
            plan=NotifyPlan(id=row.id, name=row.name), job=job.id, kind=job.kind, status=job.status,
            error=job.error if job.status != "completed" else None,
            files=snapshot.files if done and snapshot is not None else job.files_done,
            size=snapshot.size if done and snapshot is not None else job.bytes_done,
            added_size=job.added_size, snapshot=job.snapshot_id, started_at=job.started_at,
            finished_at=job.finished_at, slot=job.slot, sent_at=utcnow())
        await self._send(row.id, note, success=job.status == "completed")

    async def slot_missed(self, row: PlanRow, slot: datetime, missed: int, reason: str) -> None:
        """A scheduled backup that did not run: missed while nothing ran, or skipped while busy."""
        note = Notification(plan=NotifyPlan(id=row.id, name=row.name), kind="schedule", status="missed",
                            error=reason, slot=slot, missed=missed, sent_at=utcnow())
        await self._send(row.id, note)

    async def _send(self, plan_id: str, notification: Notification, *, success: bool = False) -> None:
        options = await self.options.get(plan_id)
        if success and not options.notify_success:
            return

        async def done(delivery: NotifyDelivery) -> None:
            async with self.catalog.transaction():
                if await self.catalog.db.get_plan(plan_id) is None:
                    return  # deleted meanwhile
                current = await self.options.get(plan_id)
                await self.options.save(plan_id, msgspec.structs.replace(current, notify_last=delivery))

        self.notifier.send(notification, self.notifier.urls_for(options.notify), done)
