"""Restore jobs: ``tv.restore.start`` (queue group ``restorer``) → a running `Job`, then files.

The request comes by core NATS request/reply and is never persisted, so the password exists
only in this process's memory while its job runs. The password is checked (the repository is
opened) before the job is created, so a wrong password is a clear error reply, not a failed job.

Before the job starts, the target must lie under a restore root (``--restore-root``, else the
plan's source folders, the data folder's ``restores/``, the temporary folder, /mnt, /media,
/srv and /home) and outside dot-folders, and the snapshot must not contradict the endorsed
history (unless ``allow_unverified``). With the password at hand, the restorer then endorses
the repository's history and tells the catalog which snapshots that covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

from nats.aio.client import Client as NATS

from timevault.proto import subjects
from timevault.proto.errors import ServiceError, invalid
from timevault.proto.jobs import Job, JobCreate, RestoreRequest
from timevault.proto.plans import (
    PlanDetail,
    PlanRef,
    PlanSecrets,
    SnapshotInfo,
    SnapshotRef,
    validate_includes,
)
from timevault.services.common import rpc
from timevault.services.common.holds import held_reads, hold
from timevault.services.common.jobs import JobContext
from timevault.services.common.util import instance_id

if TYPE_CHECKING:  # the engine is imported when a restore starts, not with the service
    from timevault.core.archiver import Progress
    from timevault.core.repository import Repository

log = logging.getLogger(__name__)


class RestorerService:
    def __init__(self, nc: NATS, *, instance: str | None = None, roots: list[str] | None = None,
                 data_dir: str | None = None) -> None:
        self.nc = nc
        self.instance = instance or instance_id("restorer")
        self.roots = [os.path.abspath(root) for root in roots] if roots else None
        self.data_dir = data_dir
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.data_dir and not self.roots:
            # The data folder's restores/ is a default restore root: made here, so a restore
            # into it does not fail for want of the folder.
            os.makedirs(os.path.join(self.data_dir, "restores"), mode=0o700, exist_ok=True)
        await rpc.serve(self.nc, subjects.RESTORE_START, RestoreRequest, self.start_restore,
                        queue=subjects.RESTORER_QUEUE)

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def start_restore(self, req: RestoreRequest) -> Job:
        from timevault.core.errors import (
            LocationNotFound,
            RepositoryError,
            RepositoryNotFound,
            StorageError,
            WrongPassword,
        )
        from timevault.core.repository import Repository
        from timevault.core.repository.history import CONTRADICTS
        from timevault.core.restore_target import TargetError, check_under_roots, default_roots
        from timevault.services.common.locations import open_service_location

        if not req.target or not os.path.isabs(req.target) or "\x00" in req.target:
            raise invalid("target must be an absolute folder path", "target")
        if not req.password:
            raise invalid("the password is required", "password")
        validate_includes(req.includes)
        snap = await rpc.request(self.nc, subjects.SNAPSHOT_GET, SnapshotRef(plan=req.plan, snapshot=req.snapshot),
                                 SnapshotInfo)
        plan = await rpc.request(self.nc, subjects.PLAN_GET, PlanRef(plan=req.plan), PlanDetail)
        roots = self.roots or default_roots(plan.sources, self.data_dir)
        try:
            check_under_roots(req.target, roots)
        except TargetError as exc:
            raise invalid(str(exc), "target") from exc
        secrets = await rpc.request(self.nc, subjects.PLAN_SECRETS, PlanRef(plan=req.plan), PlanSecrets)
        try:
            storage = held_reads(open_service_location(secrets.location, secrets.credentials, secrets.space_token), "restore.read")
        except ValueError as exc:
            raise ServiceError("unavailable", f"cannot open the repository: {exc}", "location") from exc
        try:
            repo = await Repository.open(storage, req.password)
        except WrongPassword as exc:
            await storage.close()
            raise ServiceError("unauthorized", "wrong password for this plan's repository", "password") from exc
        except (RepositoryNotFound, LocationNotFound) as exc:
            await storage.close()
            raise ServiceError("not_found", f"the plan's repository is gone: {exc}", "location") from exc
        except (RepositoryError, StorageError) as exc:
            await storage.close()
            raise ServiceError("unavailable", f"cannot open the repository: {exc}", "location") from exc
        try:
            # The snapshot's standing before this endorsement: a contradicting one is refused here,
            # as a clear reply, not as a failed job.
            history = await repo.history()
            if history.status.get(snap.id, CONTRADICTS) == CONTRADICTS and not req.allow_unverified:
                raise ServiceError("conflict", f"{history.describe(snap.id)}; pass allow_unverified to restore "
                                   "it anyway", "snapshot")
            await repo.endorse()
            endorsed = [snapshot_id for snapshot_id, status in (await repo.history()).status.items()
                        if status == "endorsed"]
            job = await rpc.request(self.nc, subjects.JOB_CREATE, JobCreate(
                plan=secrets.plan_id, kind="restore", snapshot=snap.id, target=os.path.normpath(req.target),
                includes=req.includes, worker=self.instance, endorsed=endorsed), Job)
        except (RepositoryError, StorageError) as exc:
            await repo.close()
            raise ServiceError("unavailable", f"cannot read the repository: {exc}", "location") from exc
        except BaseException:
            await repo.close()
            raise
        task = asyncio.create_task(self._run(job, repo, roots, req))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return job

    async def _run(self, job: Job, repo: Repository, roots: list[str], req: RestoreRequest) -> None:
        from timevault.core.restorer import RestoreCanceled, restore

        async with JobContext(self.nc, job, self.instance) as ctx:
            try:
                await hold("restore.start")

                def progress(p: Progress) -> None:
                    ctx.update(files_done=p.files_done, bytes_done=p.bytes_done,
                               files_total=p.files_total, bytes_total=p.bytes_total)

                async with repo.read_lock():  # a prune's sweep waits for this restore
                    result = await restore(repo, job.snapshot_id or "", job.target or "",
                                           includes=job.includes, progress=progress, cancel=ctx.cancel,
                                           allow_unverified=req.allow_unverified, keep_setid=req.keep_setid,
                                           roots=roots)
            except (RestoreCanceled, asyncio.CancelledError):
                await ctx.finish("canceled", "canceled")
                return
            except Exception as exc:
                log.warning("restore %s failed: %s", job.id, exc)
                await ctx.finish("canceled" if ctx.cancel.is_set() else "failed", str(exc) or type(exc).__name__)
                return
            finally:
                with contextlib.suppress(Exception):
                    await repo.close()
            await hold("restore.finish")
            if result.errors:
                # Finished but incomplete: everything else was restored; each loss is named.
                log.warning("restore %s: %d item(s) not restored; first: %s", job.id, len(result.errors),
                            result.errors[0])
                await ctx.finish("completed", warnings=result.errors)
            else:
                await ctx.finish("completed")
