"""A job's log: lines its worker reports (hook output, where restored items went).

They are kept as the plan's events with the job's id, so the plan log shows them in order with
everything else, and ``tv.catalog.job.events`` (``GET /api/v1/jobs/{job_id}/log``) picks out one
job's. Only the worker holding a job may add to its log.
"""

from __future__ import annotations

from timevault.proto.errors import ServiceError
from timevault.proto.jobs import JobLog, JobLogged, JobRef
from timevault.proto.plans import PlanEventList
from timevault.services.catalog.context import Catalog

MAX_LINES = 500
MAX_LINE = 4000
SCAN_EVENTS = 10000


class JobLogs:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def add(self, req: JobLog) -> JobLogged:
        """``tv.catalog.job.log``."""
        lines = [line[:MAX_LINE] for line in req.lines[:MAX_LINES]]
        async with self.catalog.transaction() as tx:
            job, _, _ = await self.catalog.job(req.job_id)
            if job.worker != req.worker:
                raise ServiceError("conflict", f"job {job.id} is held by another worker", "worker")
            for line in lines:
                await tx.event(job.plan_id, req.kind[:40] or "log", line, job.id)
        return JobLogged(added=len(lines))

    async def events(self, req: JobRef) -> PlanEventList:
        """``tv.catalog.job.events``: the job's own lines, oldest first."""
        job, _, _ = await self.catalog.job(req.job_id)
        events = await self.catalog.db.list_events(job.plan_id, SCAN_EVENTS)
        return PlanEventList(events=[event for event in events if event.job_id == req.job_id])
