"""The catalog: the only writer of TimeVault metadata, answering requests over NATS.

Plans (with the repository write keys, never the password), jobs and their lifecycle,
snapshots, the per-plan chunk index used for dedup, total stored size and the plan event log.
Status changes are published as `JobEvent`s; a reaper fails jobs whose worker went silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from timevault.proto import subjects, wire
from timevault.proto.chunks import ChunkAdd, ChunkAddReply, ChunkLookup, ChunkLookupReply
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
)
from timevault.proto.plans import (
    Plan,
    PlanAttach,
    PlanCreate,
    PlanDeleted,
    PlanDetail,
    PlanEvent,
    PlanEventList,
    PlanEventsRequest,
    PlanList,
    PlanListRequest,
    PlanRef,
    PlanSecrets,
    PlanUpdateRequest,
    SnapshotInfo,
    SnapshotList,
    SnapshotListRequest,
    SnapshotRef,
    apply_schedule_update,
    location_url,
    validate_location,
    validate_name,
    validate_password,
    validate_schedule,
    validate_sources,
)
from timevault.proto.schedule import (
    ScheduleEntry,
    ScheduleFire,
    ScheduleFireReply,
    ScheduleList,
    ScheduleListRequest,
)
from timevault.services.catalog.db import CatalogDB, PlanRow
from timevault.services.common import rpc
from timevault.services.common.slots import next_run
from timevault.services.common.util import new_id, utcnow
from timevault.services.common.work import ensure_work_stream

log = logging.getLogger(__name__)
ACTIVE = ("pending", "running")
_PLAN_ID = re.compile(r"p_[0-9a-f]{16}")  # timevault.services.common.util.new_id("p")


@dataclass
class CatalogOptions:
    job_timeout: float = 60.0
    """A running job without a heartbeat for this long is failed."""
    pending_timeout: float = 3600.0
    """A pending job nobody claims for this long is failed."""
    delete_wait: float = 60.0
    """How long plan delete waits for a running job to stop after cancel."""
    reap_every: float = 2.0
    kdf_n: int | None = None
    """Scrypt cost for new repositories (tests use a small one); None = the core's default."""


class CatalogService:
    def __init__(self, nc: NATS, db: CatalogDB, options: CatalogOptions | None = None) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.db = db
        self.options = options or CatalogOptions()
        # One writer at a time: check-then-write sequences (busy plan, unique name) stay atomic.
        self.lock = asyncio.Lock()
        self.stats = rpc.Stats()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await ensure_work_stream(self.nc)
        handlers: list[tuple[str, type, object]] = [
            (subjects.PLAN_CREATE, PlanCreate, self.plan_create),
            (subjects.PLAN_LIST, PlanListRequest, self.plan_list),
            (subjects.PLAN_GET, PlanRef, self.plan_get),
            (subjects.PLAN_UPDATE, PlanUpdateRequest, self.plan_update),
            (subjects.PLAN_DELETE, PlanRef, self.plan_delete),
            (subjects.PLAN_PAUSE, PlanRef, self.plan_pause),
            (subjects.PLAN_RESUME, PlanRef, self.plan_resume),
            (subjects.PLAN_ATTACH, PlanAttach, self.plan_attach),
            (subjects.PLAN_EVENTS, PlanEventsRequest, self.plan_events),
            (subjects.PLAN_SECRETS, PlanRef, self.plan_secrets),
            (subjects.SNAPSHOT_LIST, SnapshotListRequest, self.snapshot_list),
            (subjects.SNAPSHOT_GET, SnapshotRef, self.snapshot_get),
            (subjects.JOB_CREATE, JobCreate, self.job_create),
            (subjects.JOB_GET, JobRef, self.job_get),
            (subjects.JOB_LIST, JobListRequest, self.job_list),
            (subjects.JOB_CANCEL, JobRef, self.job_cancel),
            (subjects.JOB_CLAIM, JobClaim, self.job_claim),
            (subjects.JOB_FINISH, JobFinish, self.job_finish),
            (subjects.SCHEDULE_LIST, ScheduleListRequest, self.schedule_list),
            (subjects.SCHEDULE_FIRE, ScheduleFire, self.schedule_fire),
            (subjects.CHUNKS_LOOKUP, ChunkLookup, self.chunks_lookup),
            (subjects.CHUNKS_ADD, ChunkAdd, self.chunks_add),
        ]
        for subject, request_type, handler in handlers:
            await rpc.serve(self.nc, subject, request_type, handler,  # type: ignore[arg-type]
                            queue=subjects.CATALOG_QUEUE, stats=self.stats)
        await self.nc.subscribe(subjects.JOB_PROGRESS_ALL, cb=self._on_progress)
        self._tasks.append(asyncio.create_task(self._reaper()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- helpers -------------------------------------------------------------------------

    async def _plan(self, ref: str, *, allow_deleting: bool = False) -> PlanRow:
        plan = await self.db.get_plan(ref)
        if plan is None or (plan.deleting and not allow_deleting):
            raise ServiceError("not_found", f"no plan {ref!r}", "plan")
        return plan

    async def _job(self, job_id: str) -> tuple[Job, float, bool]:
        found = await self.db.get_job(job_id)
        if found is None:
            raise ServiceError("not_found", f"no job {job_id!r}", "job_id")
        return found

    async def _plan_view(self, row: PlanRow) -> Plan:
        active = await self.db.list_jobs(plan_id=row.id, statuses=ACTIVE, kind="backup", limit=1)
        snaps = await self.db.list_snapshots(row.id)
        completed = [snap for snap in snaps if snap.status == "completed"]
        return Plan(
            id=row.id, name=row.name, sources=row.sources, schedule=row.schedule, location=row.location,
            paused=row.paused, created_at=row.created_at, updated_at=row.updated_at,
            total_size=row.total_size,
            next_run=None if row.paused else next_run(row.schedule, max(utcnow(), row.last_slot or utcnow())),
            active_job=active[0].id if active else None,
            last_status=snaps[-1].status if snaps else None,
            last_error=snaps[-1].error if snaps and snaps[-1].status == "failed" else None,
            last_snapshot_at=completed[-1].finished_at or completed[-1].started_at if completed else None,
            snapshot_count=len(completed),
        )

    async def _event(self, plan_id: str, kind: str, message: str = "", job_id: str | None = None) -> None:
        event = PlanEvent(plan_id=plan_id, ts=utcnow(), kind=kind, message=message, job_id=job_id)
        await self.db.add_event(event)
        await self._publish(subjects.plan_event(plan_id), event)

    async def _publish(self, subject: str, message: object) -> None:
        with contextlib.suppress(Exception):  # events are best effort; state is in the DB
            await self.nc.publish(subject, wire.encode(message))

    # --- plans ---------------------------------------------------------------------------

    async def plan_create(self, req: PlanCreate) -> Plan:
        from timevault.proto.plans import validate_create

        req = validate_create(req)
        await self._check_new_plan(req.name, location_url(req.location))
        write_keys = await init_repository(location_url(req.location), req.password, self.options.kdf_n)
        now = utcnow()
        row = PlanRow(id=new_id("p"), name=req.name, sources=req.sources, schedule=req.schedule,
                      location=req.location, write_keys=write_keys, paused=False, deleting=False,
                      created_at=now, updated_at=now, resumed_at=None, last_slot=None, total_size=0)
        async with self.lock:
            try:
                await self.db.insert_plan(row)
            except sqlite3.IntegrityError as exc:
                raise ServiceError("conflict", f"a plan named {req.name!r} already exists", "name") from exc
            await self._event(row.id, "created", f"plan {row.name!r} created")
            await self.db.conn.commit()
        log.info("plan %s (%s) created", row.id, row.name)
        return await self._plan_view(row)

    async def _check_new_plan(self, name: str, url: str) -> None:
        for other in await self.db.list_plans():
            if other.name == name:
                raise ServiceError("conflict", f"a plan named {name!r} already exists", "name")
            if location_url(other.location) == url:
                raise ServiceError("conflict", f"plan {other.name!r} already uses this location", "location")

    async def plan_attach(self, req: PlanAttach) -> PlanDetail:
        """Rebuild a plan from an existing repository: keys, snapshots and chunk index."""
        name = validate_name(req.name)
        validate_password(req.password, None)
        schedule = validate_schedule(req.schedule)
        sources = validate_sources(req.sources) if req.sources else []
        location = validate_location(req.location, sources)
        url = location_url(location)
        await self._check_new_plan(name, url)
        write_keys, snapshots, chunks = await read_repository(url, req.password)
        if not sources:
            sources = snapshots[-1][1].paths if snapshots else []
        if not sources:
            raise ServiceError("invalid", "the repository has no snapshots; give the sources", "sources")
        now = utcnow()
        plan_id = await self._attached_plan_id(snapshots)
        row = PlanRow(id=plan_id, name=name, sources=sources, schedule=schedule, location=location,
                      write_keys=write_keys, paused=False, deleting=False, created_at=now, updated_at=now,
                      resumed_at=None, last_slot=None, total_size=sum(size for _, _, size in chunks))
        async with self.lock:
            try:
                await self.db.insert_plan(row)
            except sqlite3.IntegrityError as exc:
                raise ServiceError("conflict", f"a plan named {name!r} already exists", "name") from exc
            for snapshot_id, snap in snapshots:
                await self.db.save_snapshot(row.id, snapshot_info(snapshot_id, snap, row.id))
            await self.db.add_chunks(row.id, [(cid, pack, length) for cid, pack, length in chunks])
            await self._event(row.id, "attached", f"attached with {len(snapshots)} snapshots")
            await self.db.conn.commit()
        return await self.plan_get(PlanRef(plan=row.id))

    async def _attached_plan_id(self, snapshots: list[tuple[str, object]]) -> str:
        """The plan id the repository's snapshots were made under, when this catalog does not use it.

        Keeping the id keeps the next backup incremental: the archiver picks its parent snapshot
        by plan id, and a new id would make it read and chunk every file again.
        """
        old = getattr(snapshots[-1][1], "plan", None) if snapshots else None
        if isinstance(old, str) and _PLAN_ID.fullmatch(old):
            if all(other.id != old for other in await self.db.list_plans()):
                return old
        return new_id("p")

    async def plan_list(self, _req: PlanListRequest) -> PlanList:
        return PlanList(plans=[await self._plan_view(row) for row in await self.db.list_plans()
                               if not row.deleting])

    async def plan_get(self, req: PlanRef) -> PlanDetail:
        row = await self._plan(req.plan)
        view = await self._plan_view(row)
        return PlanDetail(**msgspec.structs.asdict(view), snapshots=await self.db.list_snapshots(row.id))

    async def plan_update(self, req: PlanUpdateRequest) -> Plan:
        update = req.update
        async with self.lock:
            row = await self._plan(req.plan)
            if update.name is not None and update.name != row.name:
                raise ServiceError("invalid", "a plan's name cannot be changed", "name")
            if update.location is not None:
                if validate_location(update.location, row.sources) != row.location:
                    raise ServiceError("invalid", "a plan's location cannot be changed", "location")
            sources = validate_sources(update.sources) if update.sources is not None else row.sources
            validate_location(row.location, sources)
            schedule = row.schedule
            if update.schedule is not None:
                schedule = apply_schedule_update(row.schedule, update.schedule)
            schedule_changed = schedule != row.schedule
            changed = schedule_changed or sources != row.sources
            row = msgspec.structs.replace(row, sources=sources, schedule=schedule, updated_at=utcnow())
            if schedule_changed:
                # A new schedule starts counting from now: never fire a past slot of the new one.
                row.last_slot = max(row.last_slot or row.created_at, utcnow())
            await self.db.save_plan(row)
            if changed:
                await self._event(row.id, "updated", "settings changed")
            await self.db.conn.commit()
        return await self._plan_view(row)

    async def plan_pause(self, req: PlanRef) -> Plan:
        return await self._set_paused(req.plan, True)

    async def plan_resume(self, req: PlanRef) -> Plan:
        return await self._set_paused(req.plan, False)

    async def _set_paused(self, ref: str, paused: bool) -> Plan:
        async with self.lock:
            row = await self._plan(ref)
            if row.paused != paused:
                now = utcnow()
                row = msgspec.structs.replace(row, paused=paused, updated_at=now,
                                              resumed_at=None if paused else now)
                await self.db.save_plan(row)
                await self._event(row.id, "paused" if paused else "resumed")
                await self.db.conn.commit()
        return await self._plan_view(row)

    async def plan_delete(self, req: PlanRef) -> PlanDeleted:
        """Cancel its jobs, wait for them to stop, remove every stored object, then the rows."""
        async with self.lock:
            row = await self._plan(req.plan, allow_deleting=True)
            row.deleting = True
            await self.db.save_plan(row)
            await self.db.conn.commit()
        for job in await self.db.list_jobs(plan_id=row.id, statuses=ACTIVE, limit=1000):
            with contextlib.suppress(ServiceError):
                await self.job_cancel(JobRef(job_id=job.id))
        deadline = time.monotonic() + self.options.delete_wait
        while await self.db.list_jobs(plan_id=row.id, statuses=ACTIVE, limit=1):
            if time.monotonic() > deadline:
                for job in await self.db.list_jobs(plan_id=row.id, statuses=ACTIVE, limit=1000):
                    await self._finish(job, "canceled", "plan deleted (worker did not stop in time)")
                break
            await asyncio.sleep(0.2)
        deleted = await delete_repository(location_url(row.location))
        async with self.lock:
            await self.db.delete_plan_rows(row.id)
            await self.db.conn.commit()
        await self._publish(subjects.plan_event(row.id),
                            PlanEvent(plan_id=row.id, ts=utcnow(), kind="deleted", message=row.name))
        log.info("plan %s deleted (%d objects removed)", row.id, deleted)
        return PlanDeleted(plan_id=row.id, deleted_objects=deleted)

    async def plan_events(self, req: PlanEventsRequest) -> PlanEventList:
        row = await self._plan(req.plan)
        return PlanEventList(events=await self.db.list_events(row.id, max(1, min(req.limit, 10000))))

    async def plan_secrets(self, req: PlanRef) -> PlanSecrets:
        row = await self._plan(req.plan)
        return PlanSecrets(plan_id=row.id, location=location_url(row.location), write_keys=row.write_keys)

    # --- snapshots -----------------------------------------------------------------------

    async def snapshot_list(self, req: SnapshotListRequest) -> SnapshotList:
        row = await self._plan(req.plan)
        return SnapshotList(snapshots=await self.db.list_snapshots(row.id))

    async def snapshot_get(self, req: SnapshotRef) -> SnapshotInfo:
        row = await self._plan(req.plan)
        done = [s for s in await self.db.list_snapshots(row.id) if s.status == "completed"]
        if req.snapshot == "latest":
            if not done:
                raise ServiceError("not_found", f"plan {row.name!r} has no snapshots", "snapshot")
            return done[-1]
        matches = [s for s in done if s.id == req.snapshot]
        matches = matches or [s for s in done if s.id.startswith(req.snapshot)]
        if not req.snapshot or not matches:
            raise ServiceError("not_found", f"no snapshot {req.snapshot!r} in plan {row.name!r}", "snapshot")
        if len(matches) > 1:
            raise ServiceError("invalid", f"snapshot prefix {req.snapshot!r} is ambiguous", "snapshot")
        return matches[0]

    # --- jobs ----------------------------------------------------------------------------

    async def job_create(self, req: JobCreate) -> Job:
        async with self.lock:
            row = await self._plan(req.plan)
            if req.kind == "restore":
                return await self._create_restore(row, req)
            job = await self._create_backup(row, req.trigger, None)
        await self._dispatch(job)
        return job

    async def _create_backup(self, row: PlanRow, trigger: str, slot: datetime | None) -> Job:
        """Insert a pending backup job; caller holds the lock (so 'busy' is decided atomically)."""
        active = await self.db.list_jobs(plan_id=row.id, statuses=ACTIVE, kind="backup", limit=1)
        if active:
            raise ServiceError("busy", f"plan {row.name!r} is busy: backup {active[0].id} is "
                               f"{active[0].status}", "plan")
        job = Job(id=new_id("j"), plan_id=row.id, kind="backup", status="pending", created_at=utcnow(),
                  trigger=trigger, slot=slot)  # type: ignore[arg-type]
        await self.db.save_job(job, heartbeat=time.time())
        await self._event(row.id, "job", f"backup {job.id} requested ({trigger})", job.id)
        await self.db.conn.commit()
        return job

    async def _create_restore(self, row: PlanRow, req: JobCreate) -> Job:
        """A restore job is created already claimed by the restorer that holds its password."""
        if not req.worker or not req.target or not req.snapshot:
            raise ServiceError("invalid", "a restore job needs worker, snapshot and target", "kind")
        now = utcnow()
        job = Job(id=new_id("j"), plan_id=row.id, kind="restore", status="running", created_at=now,
                  started_at=now, snapshot_id=req.snapshot, target=req.target, includes=req.includes,
                  worker=req.worker, attempt=1)
        await self.db.save_job(job, heartbeat=time.time())
        await self._event(row.id, "job", f"restore {job.id} of snapshot {req.snapshot[:12]} started", job.id)
        await self.db.conn.commit()
        await self._publish(subjects.job_event(job.id), JobEvent(job=job))
        return job

    async def _dispatch(self, job: Job) -> None:
        await self._publish(subjects.job_event(job.id), JobEvent(job=job))
        try:
            work = BackupWork(job_id=job.id, plan_id=job.plan_id)
            await self.js.publish(subjects.WORK_BACKUP, wire.encode(work))
        except Exception as exc:
            log.error("cannot queue job %s: %s", job.id, exc)
            await self._finish(job, "failed", f"cannot queue the job: {exc}")
            raise ServiceError("unavailable", "cannot queue the backup (JetStream unavailable)") from exc

    async def job_get(self, req: JobRef) -> Job:
        return (await self._job(req.job_id))[0]

    async def job_list(self, req: JobListRequest) -> JobList:
        plan_id = (await self._plan(req.plan)).id if req.plan else None
        statuses = ACTIVE if req.active else ()
        return JobList(jobs=await self.db.list_jobs(plan_id=plan_id, statuses=statuses,
                                                    limit=max(1, min(req.limit, 1000))))

    async def job_cancel(self, req: JobRef) -> Job:
        async with self.lock:
            job, _, _ = await self._job(req.job_id)
            if job.status in TERMINAL:
                return job
            if job.status == "pending":
                return await self._finish(job, "canceled", "canceled before it started", locked=True)
            await self.db.save_job(job, cancel_requested=True)
            await self.db.conn.commit()
        await self._publish(subjects.job_cancel(job.id), JobCancel(job_id=job.id))
        return job

    async def job_claim(self, req: JobClaim) -> Job:
        """A worker takes a job: pending, or running under a worker whose heartbeat stopped."""
        async with self.lock:
            found = await self.db.get_job(req.job_id)
            if found is None:
                raise ServiceError("not_found", f"no job {req.job_id!r}", "job_id")
            job, heartbeat, cancel_requested = found
            plan = await self.db.get_plan(job.plan_id)
            if plan is None or plan.deleting:
                if job.status not in TERMINAL:
                    await self._finish(job, "canceled", "plan deleted", locked=True)
                raise ServiceError("conflict", "the plan was deleted", "job_id")
            if job.status in TERMINAL or cancel_requested:
                raise ServiceError("conflict", f"job {job.id} is {job.status}", "job_id")
            stale = time.time() - heartbeat > self.options.job_timeout / 2
            if job.status == "running" and job.worker != req.worker and not stale:
                raise ServiceError("busy", f"job {job.id} is running on {job.worker}", "job_id")
            job = msgspec.structs.replace(job, status="running", worker=req.worker,
                                          started_at=job.started_at or utcnow(), attempt=job.attempt + 1)
            await self.db.save_job(job, heartbeat=time.time())
            await self.db.conn.commit()
        await self._publish(subjects.job_event(job.id), JobEvent(job=job))
        return job

    async def job_finish(self, req: JobFinish) -> Job:
        async with self.lock:
            job, _, _ = await self._job(req.job_id)
            if job.status in TERMINAL:
                if job.status == req.status:
                    return job  # a repeated report
                raise ServiceError("conflict", f"job {job.id} is already {job.status}", "job_id")
            if job.worker != req.worker:
                raise ServiceError("conflict", f"job {job.id} is held by another worker", "worker")
            if req.progress is not None:
                job = msgspec.structs.replace(job, files_done=req.progress.files_done,
                                              bytes_done=req.progress.bytes_done,
                                              files_total=req.progress.files_total,
                                              bytes_total=req.progress.bytes_total)
            return await self._finish(job, req.status, req.error, snapshot=req.snapshot, locked=True)

    async def _finish(self, job: Job, status: str, error: str | None, *,
                      snapshot: SnapshotInfo | None = None, locked: bool = False) -> Job:
        async with contextlib.AsyncExitStack() as stack:
            if not locked:
                await stack.enter_async_context(self.lock)
            now = utcnow()
            job = msgspec.structs.replace(job, status=status, finished_at=now,  # type: ignore[arg-type]
                                          error=error if status != "completed" else None)
            if job.kind == "backup":
                if snapshot is not None and status == "completed":
                    snapshot = msgspec.structs.replace(snapshot, job_id=job.id, plan_id=job.plan_id,
                                                       status="completed", error=None)
                    job.snapshot_id = snapshot.id
                    job.added_size = snapshot.added_size
                else:
                    outcome = status if status != "completed" else "failed"
                    snapshot = SnapshotInfo(id=job.id, started_at=job.started_at or job.created_at,
                                            finished_at=now, status=outcome,  # type: ignore[arg-type]
                                            error=error or "no snapshot", job_id=job.id, plan_id=job.plan_id,
                                            files=job.files_done, size=job.bytes_done)
                await self.db.save_snapshot(job.plan_id, snapshot)
            await self.db.save_job(job)
            message = f"{job.kind} {job.id} {status}"
            if error and status != "completed":
                message += f": {error}"
            await self._event(job.plan_id, "job", message, job.id)
            await self.db.conn.commit()
        await self._publish(subjects.job_event(job.id), JobEvent(job=job))
        log.info("%s", message)
        return job

    async def _on_progress(self, msg: Msg) -> None:
        try:
            progress = wire.decode(msg.data, JobProgress)
        except ServiceError:
            return
        async with self.lock:
            found = await self.db.get_job(progress.job_id)
            if found is None or found[0].status != "running" or found[0].worker != progress.worker:
                return
            job = msgspec.structs.replace(
                found[0], files_done=progress.files_done, files_total=progress.files_total,
                bytes_done=progress.bytes_done, bytes_total=progress.bytes_total, rate=progress.rate,
                added_size=progress.added_size,
            )
            await self.db.touch_job(job, time.time())
            await self.db.conn.commit()

    async def _reaper(self) -> None:
        """Fail jobs whose worker died (no heartbeat) or that nobody picked up."""
        while True:
            await asyncio.sleep(self.options.reap_every)
            try:
                await self.reap()
            except Exception:
                log.exception("reaper failed")

    async def reap(self) -> None:
        now = time.time()
        for job, cancel_requested in await self.db.stale_jobs("running", now - self.options.job_timeout,
                                                              by_heartbeat=True):
            if cancel_requested:
                await self._finish(job, "canceled", "canceled (the worker did not confirm)")
            else:
                await self._finish(job, "failed", f"the {_worker_kind(job)} stopped responding "
                                   f"(no heartbeat for {self.options.job_timeout:g}s)")
        cutoff = utcnow() - timedelta(seconds=self.options.pending_timeout)
        for job in await self.db.list_jobs(statuses=("pending",), limit=1000):
            if job.created_at < cutoff:
                await self._finish(job, "failed", "no snapshotter picked up the job in time")

    # --- schedule ------------------------------------------------------------------------

    async def schedule_list(self, _req: ScheduleListRequest) -> ScheduleList:
        return ScheduleList(entries=[
            ScheduleEntry(plan_id=row.id, schedule=row.schedule, paused=row.paused, created_at=row.created_at,
                          last_slot=row.last_slot, resumed_at=row.resumed_at)
            for row in await self.db.list_plans() if not row.deleting
        ])

    async def schedule_fire(self, req: ScheduleFire) -> ScheduleFireReply:
        async with self.lock:
            row = await self._plan(req.plan_id)
            if row.paused:
                return ScheduleFireReply(fired=False, reason="plan is paused")
            if not await self.db.claim_slot(row.id, req.slot):
                return ScheduleFireReply(fired=False, reason="slot already fired")
            await self.db.conn.commit()
            try:
                job = await self._create_backup(row, "schedule", req.slot)
            except ServiceError as exc:
                await self._event(row.id, "slot_skipped", f"scheduled backup at {req.slot:%Y-%m-%d %H:%M} "
                                  f"UTC skipped: {exc.message}")
                await self.db.conn.commit()
                return ScheduleFireReply(fired=True, reason=exc.message)
        await self._dispatch(job)
        return ScheduleFireReply(fired=True, job=job)

    # --- chunk index ---------------------------------------------------------------------

    async def chunks_lookup(self, req: ChunkLookup) -> ChunkLookupReply:
        ids = [_unhex(i) for i in req.ids]
        known = await self.db.known_chunks(req.plan_id, ids)
        return ChunkLookupReply(known=[i.hex() for i in ids if i in known])

    async def chunks_add(self, req: ChunkAdd) -> ChunkAddReply:
        async with self.lock:
            plan = await self.db.get_plan(req.plan_id)
            if plan is None or plan.deleting:
                raise ServiceError("not_found", f"no plan {req.plan_id!r}", "plan_id")
            rows = [(_unhex(c.id), c.pack, c.length) for c in req.chunks]
            added = await self.db.add_chunks(req.plan_id, rows)
            if req.pack_bytes:
                await self.db.add_total_size(req.plan_id, req.pack_bytes)
            await self.db.conn.commit()
        return ChunkAddReply(added=added)


def _unhex(value: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise ServiceError("invalid", f"bad chunk id {value[:80]!r}", "ids") from exc


def _worker_kind(job: Job) -> str:
    return "snapshotter" if job.kind == "backup" else "restorer"


# --- repository operations (the password is used here and dropped) ------------------------


async def init_repository(url: str, password: str, kdf_n: int | None) -> bytes:
    from timevault.core import crypto
    from timevault.core.repository import Repository, RepositoryError, WeakPassword
    from timevault.core.storage import StorageError, open_location

    try:
        storage = open_location(url)
    except ValueError as exc:
        raise ServiceError("invalid", str(exc), "location") from exc
    try:
        kdf = crypto.ScryptParams(n=kdf_n) if kdf_n else None
        repo = await Repository.init(storage, password, kdf=kdf)
        try:
            return repo.export_write_keys()
        finally:
            await repo.close()
    except WeakPassword as exc:
        raise ServiceError("invalid", str(exc), "password") from exc
    except RepositoryError as exc:
        await storage.close()
        raise ServiceError("conflict", f"{exc}; attach it instead of creating a plan", "location") from exc
    except (StorageError, OSError) as exc:
        await storage.close()
        raise ServiceError("unavailable", f"cannot write to the location: {exc}", "location") from exc


async def read_repository(url: str, password: str) -> tuple[bytes, list, list[tuple[bytes, str, int]]]:
    """Open with the password; return write keys, snapshots (oldest first) and the blob index."""
    from timevault.core.repository import RepositoryError, WrongPassword
    from timevault.core.repository.repo import Repository
    from timevault.core.storage import StorageError, open_location

    storage = open_location(url)
    try:
        repo = await Repository.open(storage, password)
    except WrongPassword as exc:
        await storage.close()
        raise ServiceError("unauthorized", "wrong password for this repository", "password") from exc
    except RepositoryError as exc:
        await storage.close()
        raise ServiceError("invalid", str(exc), "location") from exc
    except (StorageError, OSError) as exc:
        await storage.close()
        raise ServiceError("unavailable", f"cannot read the location: {exc}", "location") from exc
    try:
        snapshots = await repo.list_snapshots()
        index = await repo.index()
        chunks = [(blob_id, loc.pack, loc.length) for blob_id, loc in index.blobs.items()]
        return repo.export_write_keys(), snapshots, chunks
    finally:
        await repo.close()


def snapshot_info(snapshot_id: str, snap: object, plan_id: str) -> SnapshotInfo:
    """A catalog row from a repository snapshot manifest."""
    stats = snap.stats  # type: ignore[attr-defined]
    return SnapshotInfo(id=snapshot_id, started_at=datetime.fromisoformat(snap.time),  # type: ignore[attr-defined]
                        finished_at=datetime.fromisoformat(snap.finished),  # type: ignore[attr-defined]
                        size=stats.size, added_size=stats.added_size, files=stats.files, status="completed",
                        plan_id=plan_id)


async def delete_repository(url: str) -> int:
    """Remove every object at the location; sweep until a pass finds nothing (late writes)."""
    from timevault.core.storage import StorageError, open_location

    storage = open_location(url)
    deleted = 0
    try:
        empty_passes = 0
        while empty_passes < 2:
            try:
                names = [info.name async for info in storage.list()]
            except StorageError:
                names = []  # the folder is already gone
            for name in names:
                await storage.delete(name)
            deleted += len(names)
            empty_passes = empty_passes + 1 if not names else 0
            if empty_passes < 2:
                await asyncio.sleep(0.3)
    finally:
        await storage.close()
    if not url.startswith("s3://"):
        _remove_empty_dirs(url)
    return deleted


def _remove_empty_dirs(root: str) -> None:
    # The local location keeps its own folder (the user chose it) but no empty subfolders.
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        if dirpath != root:
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
