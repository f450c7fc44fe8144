"""Jobs: created (a backup queued on JetStream, a restore already claimed by its restorer),
claimed by a worker, kept alive by its progress, canceled, finished.

Every change is published as a `JobEvent` once committed. A finished backup writes its snapshot
row in the same transaction (the real snapshot, or a failed/canceled one that records why).
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import datetime
from typing import Literal

import msgspec
from nats.aio.msg import Msg

from timevault.proto import subjects, wire
from timevault.proto.errors import ServiceError
from timevault.proto.jobs import (
    TERMINAL,
    BackupWork,
    Job,
    JobCancel,
    JobClaim,
    JobCreate,
    JobEvent,
    JobFinish,
    JobList,
    JobListRequest,
    JobProgress,
    JobRef,
    PruneSummary,
    capped_warnings,
)
from timevault.proto.plans import PlanRef, SnapshotInfo
from timevault.services.catalog import pruning
from timevault.services.catalog.context import ACTIVE, Catalog, Transaction
from timevault.services.catalog.db import PlanRow
from timevault.services.common.util import new_id, utcnow

log = logging.getLogger(__name__)
Outcome = Literal["completed", "failed", "canceled"]
Trigger = Literal["manual", "schedule", "backup"]


class Jobs:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.db = catalog.db

    # --- handlers ------------------------------------------------------------------------

    async def create(self, req: JobCreate) -> Job:
        async with self.catalog.transaction() as tx:
            row = await self.catalog.plan(req.plan)
            if req.kind == "restore":
                return await self._create_restore(tx, row, req)
            if req.kind == "prune":
                job = await self.create_prune(tx, row, req.trigger)
            else:
                job = await self.create_backup(tx, row, req.trigger, None)
        await self.dispatch(job)
        return job

    async def prune(self, req: PlanRef) -> Job:
        """``tv.catalog.plan.prune``: forget by the plan's retention and remove unused data, now."""
        async with self.catalog.transaction() as tx:
            job = await self.create_prune(tx, await self.catalog.plan(req.plan), "manual")
        await self.dispatch(job)
        return job

    async def get(self, req: JobRef) -> Job:
        return (await self.catalog.job(req.job_id))[0]

    async def list_jobs(self, req: JobListRequest) -> JobList:
        plan_id = (await self.catalog.plan(req.plan)).id if req.plan else None
        statuses = ACTIVE if req.active else ()
        return JobList(jobs=await self.db.list_jobs(plan_id=plan_id, statuses=statuses,
                                                    limit=max(1, min(req.limit, 1000))))

    async def cancel(self, req: JobRef) -> Job:
        async with self.catalog.transaction() as tx:
            job, _, _ = await self.catalog.job(req.job_id)
            if job.status in TERMINAL:
                return job
            if job.status == "pending":
                return await self.record_end(tx, job, "canceled", "canceled before it started")
            await self.db.save_job(job, cancel_requested=True)
            tx.publish(subjects.job_cancel(job.id), JobCancel(job_id=job.id))
        return job

    async def claim(self, req: JobClaim) -> Job:
        """A worker takes a job: pending, or running under a worker whose heartbeat stopped."""
        refused: ServiceError | None = None
        async with self.catalog.transaction() as tx:
            job, heartbeat, cancel_requested = await self.catalog.job(req.job_id)
            plan = await self.db.get_plan(job.plan_id)
            if plan is None or plan.deleting:
                if job.status not in TERMINAL:
                    await self.record_end(tx, job, "canceled", "plan deleted")
                # Raised after the commit: the job stays canceled.
                refused = ServiceError("conflict", "the plan was deleted", "job_id")
            else:
                if job.status in TERMINAL or cancel_requested:
                    raise ServiceError("conflict", f"job {job.id} is {job.status}", "job_id")
                stale = time.time() - heartbeat > self.catalog.options.job_timeout / 2
                if job.status == "running" and job.worker != req.worker and not stale:
                    raise ServiceError("busy", f"job {job.id} is running on {job.worker}", "job_id")
                job = msgspec.structs.replace(job, status="running", worker=req.worker,
                                              started_at=job.started_at or utcnow(), attempt=job.attempt + 1)
                await self.db.save_job(job, heartbeat=time.time())
                tx.publish(subjects.job_event(job.id), JobEvent(job=job))
        if refused is not None:
            raise refused
        return job

    async def finish(self, req: JobFinish) -> Job:
        follow_up: Job | None = None
        async with self.catalog.transaction() as tx:
            job, _, _ = await self.catalog.job(req.job_id)
            if job.status in TERMINAL:
                if job.status == req.status:
                    return job  # a repeated report
                raise ServiceError("conflict", f"job {job.id} is already {job.status}", "job_id")
            if job.worker != req.worker:
                raise ServiceError("conflict", f"job {job.id} is held by another worker", "worker")
            if req.warnings and req.status == "completed":
                job = msgspec.structs.replace(job, warnings=capped_warnings(req.warnings))
            if req.progress is not None:
                job = msgspec.structs.replace(job, files_done=req.progress.files_done,
                                              bytes_done=req.progress.bytes_done,
                                              files_total=req.progress.files_total,
                                              bytes_total=req.progress.bytes_total)
            job = await self.record_end(tx, job, req.status, req.error, snapshot=req.snapshot, prune=req.prune)
            if job.kind == "backup" and job.status == "completed":
                follow_up = await self._prune_after_backup(tx, job)
        if follow_up is not None:
            try:
                await self.dispatch(follow_up)
            except ServiceError as exc:
                log.warning("cannot queue the prune after backup %s: %s", job.id, exc)
        return job

    async def _prune_after_backup(self, tx: Transaction, backup: Job) -> Job | None:
        """After each successful backup the plan is thinned and pruned (unless a prune is queued
        already: it will see this snapshot too; one that runs may have listed the snapshots before)."""
        plan = await self.db.get_plan(backup.plan_id)
        if plan is None or plan.deleting:
            return None
        if await self.db.list_jobs(plan_id=plan.id, statuses=("pending",), kind="prune", limit=1):
            return None
        return await self.create_prune(tx, plan, "backup")

    async def on_progress(self, msg: Msg) -> None:
        """A worker's `JobProgress`: its job's counters and heartbeat."""
        try:
            progress = wire.decode(msg.data, JobProgress)
        except ServiceError:
            return
        async with self.catalog.transaction():
            found = await self.db.get_job(progress.job_id)
            if found is None or found[0].status != "running" or found[0].worker != progress.worker:
                return
            job = msgspec.structs.replace(
                found[0], files_done=progress.files_done, files_total=progress.files_total,
                bytes_done=progress.bytes_done, bytes_total=progress.bytes_total, rate=progress.rate,
                added_size=progress.added_size,
            )
            await self.db.touch_job(job, time.time())

    # --- for the other parts of the catalog ----------------------------------------------

    async def create_backup(self, tx: Transaction, row: PlanRow, trigger: Trigger,
                            slot: datetime | None) -> Job:
        """Insert a pending backup job (``busy`` if the plan has one); `dispatch` it after the commit."""
        active = await self.db.list_jobs(plan_id=row.id, statuses=ACTIVE, kind="backup", limit=1)
        if active:
            raise ServiceError("busy", f"plan {row.name!r} is busy: backup {active[0].id} is "
                               f"{active[0].status}", "plan")
        job = Job(id=new_id("j"), plan_id=row.id, kind="backup", status="pending", created_at=utcnow(),
                  trigger=trigger, slot=slot)
        await self.db.save_job(job, heartbeat=time.time())
        await tx.event(row.id, "job", f"backup {job.id} requested ({trigger})", job.id)
        return job

    async def create_prune(self, tx: Transaction, row: PlanRow, trigger: Trigger) -> Job:
        """Insert a pending prune job; `dispatch` it after the commit. ``busy`` if the plan has one
        pending, or (asked for by a person) running: a prune after a backup may queue behind a
        running one, which listed the snapshots before that backup ended."""
        statuses = ACTIVE if trigger == "manual" else ("pending",)
        active = await self.db.list_jobs(plan_id=row.id, statuses=statuses, kind="prune", limit=1)
        if active:
            raise ServiceError("busy", f"plan {row.name!r} is busy: prune {active[0].id} is "
                               f"{active[0].status}", "plan")
        job = Job(id=new_id("j"), plan_id=row.id, kind="prune", status="pending", created_at=utcnow(),
                  trigger=trigger)
        await self.db.save_job(job, heartbeat=time.time())
        await tx.event(row.id, "job", f"prune {job.id} requested ({trigger})", job.id)
        return job

    async def dispatch(self, job: Job) -> None:
        """Announce a committed backup or prune job and put it on the work queue (failing it if that fails)."""
        await self.catalog.publish(subjects.job_event(job.id), JobEvent(job=job))
        try:
            work = BackupWork(job_id=job.id, plan_id=job.plan_id)
            subject = subjects.WORK_PRUNE if job.kind == "prune" else subjects.WORK_BACKUP
            await self.catalog.js.publish(subject, wire.encode(work))
        except Exception as exc:
            log.error("cannot queue job %s: %s", job.id, exc)
            await self.end(job, "failed", f"cannot queue the job: {exc}")
            raise ServiceError("unavailable", f"cannot queue the {job.kind} (JetStream unavailable)") from exc

    async def end(self, job: Job, status: Outcome, error: str | None) -> Job:
        """End a job in a transaction of its own, unless it ended meanwhile (then that stands)."""
        async with self.catalog.transaction() as tx:
            found = await self.db.get_job(job.id)
            if found is None or found[0].status in TERMINAL:
                return found[0] if found is not None else job
            return await self.record_end(tx, found[0], status, error)

    async def record_end(self, tx: Transaction, job: Job, status: Outcome, error: str | None, *,
                         snapshot: SnapshotInfo | None = None, prune: PruneSummary | None = None) -> Job:
        """End a job within `tx`; a backup also gets its snapshot row (a failed one records why); what
        a prune (or a backup thinning a full location) forgot and removed is recorded too, whatever
        the outcome: it happened."""
        now = utcnow()
        job = msgspec.structs.replace(job, status=status, finished_at=now,
                                      error=error if status != "completed" else None)
        if prune is not None:
            job.prune = prune
            await pruning.record(tx, job, prune)
        if job.kind == "backup":
            if snapshot is not None and status == "completed":
                snapshot = msgspec.structs.replace(snapshot, job_id=job.id, plan_id=job.plan_id,
                                                   status="completed", error=None)
                job.snapshot_id = snapshot.id
                job.added_size = snapshot.added_size
            else:
                outcome: Literal["failed", "canceled"] = "failed" if status == "completed" else status
                snapshot = SnapshotInfo(id=job.id, started_at=job.started_at or job.created_at,
                                        finished_at=now, status=outcome, error=error or "no snapshot",
                                        job_id=job.id, plan_id=job.plan_id, files=job.files_done,
                                        size=job.bytes_done)
            await self.db.save_snapshot(job.plan_id, snapshot)
        await self.db.save_job(job)
        message = f"{job.kind} {job.id} {status}"
        if error and status != "completed":
            message += f": {error}"
        await tx.event(job.plan_id, "job", message, job.id)
        tx.publish(subjects.job_event(job.id), JobEvent(job=job))
        for listener in self.catalog.job_ended:
            tx.after(functools.partial(listener, job, snapshot))
        log.info("%s", message)
        return job

    async def _create_restore(self, tx: Transaction, row: PlanRow, req: JobCreate) -> Job:
        """A restore job is created already claimed by the restorer that holds its password."""
        if not req.worker or not req.target or not req.snapshot:
            raise ServiceError("invalid", "a restore job needs worker, snapshot and target", "kind")
        now = utcnow()
        job = Job(id=new_id("j"), plan_id=row.id, kind="restore", status="running", created_at=now,
                  started_at=now, snapshot_id=req.snapshot, target=req.target, includes=req.includes,
                  worker=req.worker, attempt=1, original_place=req.original_place)
        await self.db.save_job(job, heartbeat=time.time())
        if req.endorsed:  # the restorer signed the history with the password: mark what it covers
            endorsed = set(req.endorsed)
            for snap in await self.db.list_snapshots(row.id):
                if snap.id in endorsed and not snap.endorsed:
                    await self.db.save_snapshot(row.id, msgspec.structs.replace(snap, endorsed=True))
        await tx.event(row.id, "job", f"restore {job.id} of snapshot {req.snapshot[:12]} started", job.id)
        tx.publish(subjects.job_event(job.id), JobEvent(job=job))
        return job


def worker_kind(job: Job) -> str:
    """The kind of service that runs `job` (for messages)."""
    return "restorer" if job.kind == "restore" else "snapshotter"
