"""The catalog: the only writer of TimeVault metadata, answering requests over NATS.

This module only wires subjects to handlers. The handlers live with their concern:
`plans` (plans, their event log and write keys), `snapshots`, `jobs` (their lifecycle and
`JobEvent`s), `reaper` (jobs whose worker went silent), `schedule` (slots fired once),
`chunks` (the per-plan index used for dedup, kept in step with the repository), `pruning` (what
a prune did, recorded) and `repo_ops` (the operations on a repository itself, the only ones that
see a password). `context` holds what they share; `db` the SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.aio.client import Client as NATS

from timevault.proto import subjects
from timevault.proto.chunks import ChunkAdd, ChunkLookup, ChunkSync, ChunkUpdate
from timevault.proto.jobs import JobClaim, JobCreate, JobFinish, JobListRequest, JobLog, JobRef
from timevault.proto.plans import (
    PlanAttach,
    PlanCreate,
    PlanEventsRequest,
    PlanListRequest,
    PlanRef,
    PlanUpdateRequest,
    SnapshotListRequest,
    SnapshotRef,
)
from timevault.proto.schedule import ScheduleFire, ScheduleListRequest
from timevault.proto.stats import CatalogStatsRequest
from timevault.services.catalog.chunks import ChunkIndex
from timevault.services.catalog.context import Catalog, CatalogOptions
from timevault.services.catalog.db import CatalogDB
from timevault.services.catalog.figures import Figures
from timevault.services.catalog.job_log import JobLogs
from timevault.services.catalog.jobs import Jobs
from timevault.services.catalog.notifications import Notifications
from timevault.services.catalog.plans import Plans
from timevault.services.catalog.reaper import Reaper
from timevault.services.catalog.schedule import Scheduling
from timevault.services.catalog.snapshots import Snapshots
from timevault.services.catalog.spaces import SpaceSignIns
from timevault.services.common import rpc
from timevault.services.common.work import ensure_event_stream, ensure_work_stream

__all__ = ["CatalogOptions", "CatalogService"]
T = TypeVar("T")


class CatalogService:
    def __init__(self, nc: NATS, db: CatalogDB, options: CatalogOptions | None = None) -> None:
        self.catalog = Catalog(nc, db, options or CatalogOptions())
        self.jobs = Jobs(self.catalog)
        self.spaces = SpaceSignIns(self.catalog)
        self.plans = Plans(self.catalog, self.jobs, self.spaces)
        self.snapshots = Snapshots(self.catalog)
        self.schedule = Scheduling(self.catalog, self.jobs)
        self.chunks = ChunkIndex(self.catalog)
        self.reaper = Reaper(self.catalog, self.jobs)
        self.job_logs = JobLogs(self.catalog)
        self.notifications = Notifications(self.catalog)
        self.figures = Figures(self.catalog)
        self.stats = rpc.STATS
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        nc = self.catalog.nc
        await self.plans.options.init()
        await self.plans.credentials.init()
        replicas = self.catalog.options.stream_replicas
        await ensure_work_stream(nc, replicas, update=True)
        await ensure_event_stream(nc, replicas, update=True)
        plans, snapshots, jobs, schedule, chunks = self.plans, self.snapshots, self.jobs, self.schedule, self.chunks
        await self._serve(subjects.PLAN_CREATE, PlanCreate, plans.create)
        await self._serve(subjects.PLAN_LIST, PlanListRequest, plans.list_plans)
        await self._serve(subjects.PLAN_GET, PlanRef, plans.get)
        await self._serve(subjects.PLAN_UPDATE, PlanUpdateRequest, plans.update)
        await self._serve(subjects.PLAN_DELETE, PlanRef, plans.delete)
        await self._serve(subjects.PLAN_PAUSE, PlanRef, plans.pause)
        await self._serve(subjects.PLAN_RESUME, PlanRef, plans.resume)
        await self._serve(subjects.PLAN_ATTACH, PlanAttach, plans.attach)
        await self._serve(subjects.PLAN_EVENTS, PlanEventsRequest, plans.events)
        await self._serve(subjects.PLAN_SECRETS, PlanRef, plans.secrets)
        await self._serve(subjects.SNAPSHOT_LIST, SnapshotListRequest, snapshots.list_snapshots)
        await self._serve(subjects.SNAPSHOT_GET, SnapshotRef, snapshots.get)
        await self._serve(subjects.JOB_CREATE, JobCreate, jobs.create)
        await self._serve(subjects.JOB_GET, JobRef, jobs.get)
        await self._serve(subjects.JOB_LIST, JobListRequest, jobs.list_jobs)
        await self._serve(subjects.JOB_CANCEL, JobRef, jobs.cancel)
        await self._serve(subjects.JOB_CLAIM, JobClaim, jobs.claim)
        await self._serve(subjects.JOB_FINISH, JobFinish, jobs.finish)
        await self._serve(subjects.JOB_LOG, JobLog, self.job_logs.add)
        await self._serve(subjects.JOB_EVENTS, JobRef, self.job_logs.events)
        await self._serve(subjects.SCHEDULE_LIST, ScheduleListRequest, schedule.list_entries)
        await self._serve(subjects.SCHEDULE_FIRE, ScheduleFire, schedule.fire)
        await self._serve(subjects.CHUNKS_LOOKUP, ChunkLookup, chunks.lookup)
        await self._serve(subjects.CHUNKS_ADD, ChunkAdd, chunks.add)
        await self._serve(subjects.CATALOG_STATS, CatalogStatsRequest, self.figures.stats)
        await self._serve(subjects.CHUNKS_SYNC, ChunkSync, chunks.sync)
        await self._serve(subjects.CHUNKS_UPDATE, ChunkUpdate, chunks.update)
        await self._serve(subjects.PLAN_PRUNE, PlanRef, jobs.prune)
        await nc.subscribe(subjects.JOB_PROGRESS_ALL, cb=jobs.on_progress)
        await self.spaces.start(self.stats)
        self._tasks.append(asyncio.create_task(self.reaper.run()))

    async def stop(self) -> None:
        await self.spaces.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.notifications.close()

    async def _serve(self, subject: str, request_type: type[T], handler: Callable[[T], Awaitable[object]]) -> None:
        await rpc.serve(self.catalog.nc, subject, request_type, handler, queue=subjects.CATALOG_QUEUE,
                        stats=self.stats)
