"""Plans: created (with a new repository) or attached (to an existing one), listed, changed,
paused and resumed, deleted with everything they stored; their event log and write keys.

A plan keeps the repository's write keys, never its password (see `repo_ops`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from typing import TYPE_CHECKING

import msgspec

from timevault.proto import subjects
from timevault.proto.errors import ServiceError
from timevault.proto.jobs import JobRef
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
    Retention,
    apply_schedule_update,
    describe_retention,
    location_url,
    validate_create,
    validate_credentials,
    validate_location,
    validate_name,
    validate_password,
    validate_retention,
    validate_schedule,
    validate_sources,
)
from timevault.services.catalog import plan_options, repo_ops
from timevault.services.catalog.context import ACTIVE, Catalog
from timevault.services.catalog.credentials import CredentialStore
from timevault.services.catalog.db import LifecycleRow, PlanRow
from timevault.services.catalog.jobs import Jobs
from timevault.services.catalog.spaces import SpaceSignIns
from timevault.services.common.slots import next_run
from timevault.services.common.util import new_id, utcnow

if TYPE_CHECKING:
    from timevault.core.repository.format import Snapshot

log = logging.getLogger(__name__)
_PLAN_ID = re.compile(r"p_[0-9a-f]{16}")  # timevault.services.common.util.new_id("p")


class Plans:
    def __init__(self, catalog: Catalog, jobs: Jobs, spaces: SpaceSignIns) -> None:
        self.catalog = catalog
        self.spaces = spaces
        self.db = catalog.db
        self.jobs = jobs
        self.options = plan_options.OptionsStore(catalog.db)
        self.credentials = CredentialStore(catalog.db)

    async def create(self, req: PlanCreate) -> Plan:
        req = validate_create(req)
        url = location_url(req.location)
        await self._check_new(req.name, url)
        field = "location.path" if req.location.type == "local" else "location"
        write_keys = await repo_ops.init_repository(url, req.password, self.catalog.options.test_weak_kdf,
                                                    req.credentials, field,
                                                    space_token=await self.spaces.require_token(url))
        now = utcnow()
        row = PlanRow(id=new_id("p"), name=req.name, sources=req.sources, schedule=req.schedule,
                      location=req.location, write_keys=write_keys, paused=False, deleting=False,
                      created_at=now, updated_at=now, resumed_at=None, last_slot=None, total_size=0)
        # A new repository has no garbage collection state yet: its generation is the empty one.
        lifecycle = LifecycleRow(retention=req.retention or Retention(), thin_when_full=req.thin_when_full,
                                 generation=[])
        async with self.catalog.transaction() as tx:
            await self._insert(row)
            await self.options.save(row.id, plan_options.from_create(req))
            if req.credentials is not None:
                await self.credentials.save(row.id, req.credentials)
            await self.db.save_lifecycle(row.id, lifecycle)
            await tx.event(row.id, "created", f"plan {row.name!r} created; retention "
                           f"{describe_retention(lifecycle.retention)}")
        log.info("plan %s (%s) created", row.id, row.name)
        return await self.view(row)

    async def attach(self, req: PlanAttach) -> PlanDetail:
        """Rebuild a plan from an existing repository: keys, snapshots and chunk index."""
        name = validate_name(req.name)
        validate_password(req.password, None)
        schedule = validate_schedule(req.schedule)
        sources = validate_sources(req.sources) if req.sources else []
        location = validate_location(req.location, sources)
        url = location_url(location)
        retention = validate_retention(req.retention)
        await self._check_new(name, url)
        credentials = validate_credentials(req.credentials, location)
        contents = await repo_ops.read_repository(url, req.password, credentials,
                                                  space_token=await self.spaces.require_token(url))
        write_keys, snapshots, chunks, endorsed = (contents.write_keys, contents.snapshots, contents.chunks,
                                                   contents.endorsed)
        if not sources:
            sources = snapshots[-1][1].paths if snapshots else []
        if not sources:
            raise ServiceError("invalid", "the repository has no snapshots; give the sources", "sources")
        now = utcnow()
        plan_id = await self._attached_plan_id(snapshots)
        row = PlanRow(id=plan_id, name=name, sources=sources, schedule=schedule, location=location,
                      write_keys=write_keys, paused=False, deleting=False, created_at=now, updated_at=now,
                      resumed_at=None, last_slot=None, total_size=0)
        lifecycle = LifecycleRow(retention=retention, thin_when_full=req.thin_when_full,
                                 generation=contents.generation)
        async with self.catalog.transaction() as tx:
            await self._insert(row)
            if credentials is not None:
                await self.credentials.save(row.id, credentials)
            await self.db.save_lifecycle(row.id, lifecycle)
            for snapshot_id, snap in snapshots:
                await self.db.save_snapshot(row.id, repo_ops.snapshot_info(snapshot_id, snap, row.id,
                                                                            endorsed=snapshot_id in endorsed))
            await self.db.replace_chunks(row.id, chunks, contents.packs)
            await tx.event(row.id, "attached", f"attached with {len(snapshots)} snapshots; retention "
                           f"{describe_retention(retention)}")
        return await self.get(PlanRef(plan=row.id))

    async def list_plans(self, _req: PlanListRequest) -> PlanList:
        options = await self.options.all()
        keys = await self.credentials.plan_ids()
        return PlanList(plans=[await self.view(row, options.get(row.id), row.id in keys)
                               for row in await self.db.list_plans() if not row.deleting])

    async def get(self, req: PlanRef) -> PlanDetail:
        row = await self.catalog.plan(req.plan)
        view = await self.view(row)
        return PlanDetail(**msgspec.structs.asdict(view), snapshots=await self.db.list_snapshots(row.id))

    async def update(self, req: PlanUpdateRequest) -> Plan:
        update = req.update
        async with self.catalog.transaction() as tx:
            row = await self.catalog.plan(req.plan)
            if update.name is not None and update.name != row.name:
                raise ServiceError("invalid", "a plan's name cannot be changed", "name")
            if update.location is not None:
                if validate_location(update.location, row.sources) != row.location:
                    raise ServiceError("invalid", "a plan's location cannot be changed", "location")
            sources = validate_sources(update.sources) if update.sources is not None else row.sources
            validate_location(row.location, sources, blame="sources")
            schedule = row.schedule
            if update.schedule is not None:
                schedule = apply_schedule_update(row.schedule, update.schedule)
            lifecycle = await self.db.get_lifecycle(row.id)
            retention = validate_retention(update.retention) if update.retention is not None else lifecycle.retention
            thin = update.thin_when_full if update.thin_when_full is not None else lifecycle.thin_when_full
            schedule_changed = schedule != row.schedule
            options = await self.options.get(row.id)
            new_options = plan_options.apply_update(options, update)
            retention_changed = retention != lifecycle.retention or thin != lifecycle.thin_when_full
            changed = schedule_changed or sources != row.sources or new_options != options or retention_changed
            if new_options != options:
                await self.options.save(row.id, new_options)
            if update.credentials is not None:
                await self.credentials.save(row.id, validate_credentials(update.credentials, row.location)
                                            or update.credentials)
                changed = True
            row = msgspec.structs.replace(row, sources=sources, schedule=schedule, updated_at=utcnow())
            if schedule_changed:
                # A new schedule starts counting from now: never fire a past slot of the new one.
                row.last_slot = max(row.last_slot or row.created_at, utcnow())
            await self.db.save_plan(row)
            if retention_changed:
                await self.db.save_lifecycle(row.id, msgspec.structs.replace(lifecycle, retention=retention,
                                                                             thin_when_full=thin))
            if changed:
                message = "settings changed"
                if retention_changed:
                    message += f"; retention {describe_retention(retention)}" + (
                        ", thinning when full" if thin else "")
                await tx.event(row.id, "updated", message)
        return await self.view(row)

    async def pause(self, req: PlanRef) -> Plan:
        return await self._set_paused(req.plan, True)

    async def resume(self, req: PlanRef) -> Plan:
        return await self._set_paused(req.plan, False)

    async def delete(self, req: PlanRef) -> PlanDeleted:
        """Cancel its jobs, wait for them to stop, remove every stored object, then the rows."""
        async with self.catalog.transaction():
            row = await self.catalog.plan(req.plan, allow_deleting=True)
            row.deleting = True
            await self.db.save_plan(row)
        for job in await self.db.list_jobs(plan_id=row.id, statuses=ACTIVE, limit=1000):
            with contextlib.suppress(ServiceError):
                await self.jobs.cancel(JobRef(job_id=job.id))
        deadline = time.monotonic() + self.catalog.options.delete_wait
        while await self.db.list_jobs(plan_id=row.id, statuses=ACTIVE, limit=1):
            if time.monotonic() > deadline:
                for job in await self.db.list_jobs(plan_id=row.id, statuses=ACTIVE, limit=1000):
                    await self.jobs.end(job, "canceled", "plan deleted (worker did not stop in time)")
                break
            await asyncio.sleep(0.2)
        url = location_url(row.location)
        deleted = await repo_ops.delete_repository(url, await self.credentials.get(row.id),
                                                   space_token=await self.spaces.token_for(url))
        async with self.catalog.transaction() as tx:
            await self.db.delete_plan_rows(row.id)
            await self.options.delete(row.id)
            await self.credentials.delete(row.id)
            tx.publish(subjects.plan_event(row.id),
                       PlanEvent(plan_id=row.id, ts=utcnow(), kind="deleted", message=row.name))
        log.info("plan %s deleted (%d objects removed)", row.id, deleted)
        return PlanDeleted(plan_id=row.id, deleted_objects=deleted)

    async def events(self, req: PlanEventsRequest) -> PlanEventList:
        row = await self.catalog.plan(req.plan)
        return PlanEventList(events=await self.db.list_events(row.id, max(1, min(req.limit, 10000))))

    async def secrets(self, req: PlanRef) -> PlanSecrets:
        row = await self.catalog.plan(req.plan)
        url = location_url(row.location)
        return PlanSecrets(plan_id=row.id, location=url, write_keys=row.write_keys,
                           credentials=await self.credentials.get(row.id),
                           space_token=await self.spaces.token_for(url))

    async def view(self, row: PlanRow, options: plan_options.PlanOptions | None = None,
                   keys: bool | None = None) -> Plan:
        """The plan as clients see it, with its next run, active job, latest outcome and options."""
        options = options or await self.options.get(row.id)
        keys = keys if keys is not None else await self.credentials.get(row.id) is not None
        active = await self.db.list_jobs(plan_id=row.id, statuses=ACTIVE, kind="backup", limit=1)
        snaps = await self.db.list_snapshots(row.id)
        completed = [snap for snap in snaps if snap.status == "completed"]
        lifecycle = await self.db.get_lifecycle(row.id)
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
            **plan_options.view(options), credentials_stored=keys,
            retention=lifecycle.retention,
            thin_when_full=lifecycle.thin_when_full,
            last_prune_at=lifecycle.last_prune_at,
        )

    # --- internals -----------------------------------------------------------------------

    async def _insert(self, row: PlanRow) -> None:
        try:
            await self.db.insert_plan(row)
        except sqlite3.IntegrityError as exc:
            raise ServiceError("conflict", f"a plan named {row.name!r} already exists", "name") from exc

    async def _check_new(self, name: str, url: str) -> None:
        for other in await self.db.list_plans():
            if other.name == name:
                raise ServiceError("conflict", f"a plan named {name!r} already exists", "name")
            if location_url(other.location) == url:
                raise ServiceError("conflict", f"plan {other.name!r} already uses this location", "location")

    async def _attached_plan_id(self, snapshots: list[tuple[str, Snapshot]]) -> str:
        """The plan id the repository's snapshots were made under, when this catalog does not use it.

        Keeping the id keeps the next backup incremental: the archiver picks its parent snapshot
        by plan id, and a new id would make it read and chunk every file again.
        """
        old = snapshots[-1][1].plan if snapshots else None
        if isinstance(old, str) and _PLAN_ID.fullmatch(old):
            if all(other.id != old for other in await self.db.list_plans()):
                return old
        return new_id("p")

    async def _set_paused(self, ref: str, paused: bool) -> Plan:
        async with self.catalog.transaction() as tx:
            row = await self.catalog.plan(ref)
            if row.paused != paused:
                now = utcnow()
                row = msgspec.structs.replace(row, paused=paused, updated_at=now,
                                              resumed_at=None if paused else now)
                await self.db.save_plan(row)
                await tx.event(row.id, "paused" if paused else "resumed")
        return await self.view(row)
