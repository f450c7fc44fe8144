"""Restore jobs: ``tv.restore.start`` (queue group ``restorer``) → a running `Job`, then files.

The request comes by core NATS request/reply and is never persisted, so the password exists
only in this process's memory while its job runs. The password is checked (the repository is
opened) before the job is created, so a wrong password is a clear error reply, not a failed job.
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
from timevault.proto.plans import PlanRef, PlanSecrets, SnapshotInfo, SnapshotRef
from timevault.services.common import rpc
from timevault.services.common.jobs import JobContext
from timevault.services.common.util import instance_id

if TYPE_CHECKING:  # the engine is imported when a restore starts, not with the service
    from timevault.core.archiver import Progress
    from timevault.core.repository import Repository

log = logging.getLogger(__name__)


class RestorerService:
    def __init__(self, nc: NATS, *, instance: str | None = None) -> None:
        self.nc = nc
        self.instance = instance or instance_id("restorer")
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
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
        from timevault.core.storage import open_location

        if not req.target or not os.path.isabs(req.target):
            raise invalid("target must be an absolute folder path", "target")
        if not req.password:
            raise invalid("the password is required", "password")
        snap = await rpc.request(self.nc, subjects.SNAPSHOT_GET, SnapshotRef(plan=req.plan, snapshot=req.snapshot),
                                 SnapshotInfo)
        secrets = await rpc.request(self.nc, subjects.PLAN_SECRETS, PlanRef(plan=req.plan), PlanSecrets)
        storage = open_location(secrets.location)
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
            job = await rpc.request(self.nc, subjects.JOB_CREATE, JobCreate(
                plan=secrets.plan_id, kind="restore", snapshot=snap.id, target=os.path.normpath(req.target),
                includes=req.includes, worker=self.instance), Job)
        except BaseException:
            await repo.close()
            raise
        task = asyncio.create_task(self._run(job, repo))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return job

    async def _run(self, job: Job, repo: Repository) -> None:
        from timevault.core.restorer import RestoreCanceled, restore

        async with JobContext(self.nc, job, self.instance) as ctx:
            try:
                def progress(p: Progress) -> None:
                    ctx.update(files_done=p.files_done, bytes_done=p.bytes_done,
                               files_total=p.files_total, bytes_total=p.bytes_total)

                result = await restore(repo, job.snapshot_id or "", job.target or "",
                                       includes=job.includes, progress=progress, cancel=ctx.cancel)
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
            if result.errors:
                await ctx.finish("failed", f"{len(result.errors)} files not restored; first: {result.errors[0]}")
            else:
                await ctx.finish("completed")
