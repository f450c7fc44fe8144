"""The snapshotter: takes backup and prune jobs from the JetStream work queue and runs them.

Per job: claim it at the catalog, open the repository with the write tier only (it never sees
the password), run `timevault.core.archiver.backup` with the catalog for dedup and uploaders as the sink,
and report the snapshot to the catalog only after the sink confirmed every blob durable and the
manifest was written. The work item is acked after the report, and kept alive with
``in_progress`` while the job runs, so a snapshotter that dies mid-job has its job redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Literal

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext

from timevault.proto import subjects, wire
from timevault.proto.errors import ServiceError
from timevault.proto.jobs import BackupWork, Job, JobClaim, PruneSummary
from timevault.proto.plans import PlanDetail, PlanRef, PlanSecrets, SnapshotInfo
from timevault.services.common import rpc
from timevault.services.common.holds import hold
from timevault.services.common.jobs import JobContext
from timevault.services.common.util import instance_id
from timevault.services.common.work import ensure_work_stream
from timevault.services.snapshotter.catalog_index import CatalogIndex
from timevault.services.snapshotter.hooks import HookFailed, JobHooks
from timevault.services.snapshotter.remote import MAX_IN_FLIGHT, CatalogKnownBlobs, UploadSink
from timevault.services.snapshotter.space import RESERVE, ensure_space

# The upload window (remote.MAX_IN_FLIGHT) holds sent-but-unconfirmed blobs on top of this.
ARCHIVER_IN_FLIGHT = 32 * 1024 * 1024

log = logging.getLogger(__name__)


class Snapshotter:
    def __init__(self, nc: NATS, *, concurrency: int = 1, ack_wait: float = 30.0,
                 cache_dir: str | None = None, max_in_flight: int = MAX_IN_FLIGHT,
                 instance: str | None = None, stream_replicas: int = 1, reserve: int = RESERVE) -> None:
        self.nc = nc
        self.stream_replicas = stream_replicas
        self.js = nc.jetstream()
        self.concurrency = concurrency
        self.ack_wait = ack_wait
        self.cache_dir = cache_dir
        self.max_in_flight = max_in_flight
        self.instance = instance or instance_id("snapshotter")
        self.reserve = reserve

    async def run(self, stop: asyncio.Event) -> None:
        """Take backup and prune jobs from their work queues until `stop` is set."""
        await ensure_work_stream(self.nc, self.stream_replicas)
        await asyncio.gather(
            self._consume(stop, subjects.WORK_BACKUP, subjects.SNAPSHOTTER_DURABLE, self.concurrency, self.run_job),
            self._consume(stop, subjects.WORK_PRUNE, subjects.PRUNER_DURABLE, 1, self.run_prune),
        )

    async def _consume(self, stop: asyncio.Event, subject: str, durable: str, concurrency: int,
                       run: Callable[[Job, Msg | None], Awaitable[None]]) -> None:
        sub = await self._subscribe(stop, subject, durable)
        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            await slots.acquire()
            if stop.is_set():
                break
            try:
                msgs = await sub.fetch(1, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                slots.release()
                continue
            except Exception as exc:  # NATS restarting: keep trying
                slots.release()
                log.debug("fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                task = asyncio.create_task(self._handle(msg, run))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _task: slots.release())
        # Shutting down: cancel running jobs; their work items are redelivered to another copy.
        for task in list(running):
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def _subscribe(self, stop: asyncio.Event, subject: str, durable: str) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
                                ack_wait=self.ack_wait, max_deliver=50, filter_subject=subject)
        while True:
            try:
                return await self.js.pull_subscribe(subject, durable=durable, stream=subjects.WORK_STREAM,
                                                    config=config)
            except Exception as exc:
                if stop.is_set():
                    raise
                log.info("waiting for JetStream: %s", exc)
                await asyncio.sleep(0.5)

    async def _handle(self, msg: Msg, run: Callable[[Job, Msg | None], Awaitable[None]]) -> None:
        try:
            work = wire.decode(msg.data, BackupWork)
        except ServiceError:
            log.error("dropping malformed work item")
            await msg.term()
            return
        try:
            job = await rpc.request(self.nc, subjects.JOB_CLAIM, JobClaim(job_id=work.job_id, worker=self.instance),
                                    Job)
        except ServiceError as exc:
            if exc.code == "unavailable":
                await msg.nak(delay=1)  # catalog down: try again later
            elif exc.code == "busy":
                # Redelivered while the catalog still sees the old worker's heartbeat: if that
                # worker died, its heartbeat goes stale and a later delivery takes the job over.
                await msg.nak(delay=2)
            else:
                log.info("job %s not taken: %s", work.job_id, exc)  # finished, canceled or running elsewhere
                await msg.ack()
            return
        log.info("job %s: %s of plan %s (attempt %d)", job.id, job.kind, job.plan_id, job.attempt)
        try:
            await run(job, msg)
        finally:
            with contextlib.suppress(Exception):
                await msg.ack()

    async def run_prune(self, job: Job, msg: Msg | None = None) -> None:
        """A prune job: forget by the plan's retention, then remove unused data (see `pruning`)."""
        from timevault.core.errors import PruneCanceled
        from timevault.core.repository import Repository
        from timevault.services.common.locations import open_service_location
        from timevault.services.snapshotter.pruning import prune_plan

        async with JobContext(self.nc, job, self.instance, on_beat=_keep_alive(msg)) as ctx:
            try:
                plan = await rpc.request_retrying(self.nc, subjects.PLAN_GET, PlanRef(plan=job.plan_id), PlanDetail)
                secrets = await rpc.request_retrying(self.nc, subjects.PLAN_SECRETS, PlanRef(plan=job.plan_id),
                                                     PlanSecrets)
                repo = await Repository.open_write_only(
                    open_service_location(secrets.location, secrets.credentials, secrets.space_token),
                    secrets.write_keys)
                try:
                    summary = await prune_plan(self.nc, repo, plan, always_mark=job.trigger == "manual",
                                               cancel=ctx.cancel)
                finally:
                    await repo.close()
            except (PruneCanceled, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and not ctx.cancel.is_set():
                    raise  # service shutting down: leave the job for redelivery
                await ctx.finish("canceled", "canceled by user")
                return
            except Exception as exc:
                reason = _reason(exc)
                log.warning("job %s failed: %s", job.id, reason)
                await ctx.finish("failed", reason)
                return
            await ctx.finish("completed", prune=summary)
            log.info("job %s: forgot %d snapshot(s), deleted %d pack(s), freed %d bytes", job.id,
                     len(summary.forgotten), summary.packs_deleted, summary.bytes_freed)

    async def run_job(self, job: Job, msg: Msg | None = None) -> None:
        from timevault.core.archiver import BackupCanceled, ExcludeOptions, Progress, backup
        from timevault.core.repository import Repository
        from timevault.services.common.locations import open_service_location

        async with JobContext(self.nc, job, self.instance, on_beat=_keep_alive(msg)) as ctx:
            sink: UploadSink | None = None
            hooks: JobHooks | None = None
            thinned = PruneSummary()

            async def finish(status: Literal["completed", "failed", "canceled"], error: str | None = None,
                             snapshot: SnapshotInfo | None = None) -> None:
                if hooks is not None:
                    await hooks.after(status)  # the post-command runs whatever the outcome
                # A backup reports thinning only when it forgot something.
                await ctx.finish(status, error, snapshot, prune=thinned if thinned.forgotten else None)

            try:
                await hold("backup.start")
                # Asked again while the catalog is away (restarting): the job goes on, not fails.
                plan = await rpc.request_retrying(self.nc, subjects.PLAN_GET, PlanRef(plan=job.plan_id), PlanDetail)
                secrets = await rpc.request_retrying(self.nc, subjects.PLAN_SECRETS, PlanRef(plan=job.plan_id),
                                                     PlanSecrets)
                repo = await Repository.open_write_only(open_service_location(secrets.location, secrets.credentials, secrets.space_token),
                                                        secrets.write_keys)
                try:
                    # Room first: a backup that cannot fit fails before anything runs, the pre-command too.
                    await ensure_space(self.nc, repo, plan, reserve=self.reserve, summary=thinned)
                    hooks = JobHooks(ctx, plan)
                    await hooks.before()
                    catalog = CatalogIndex(self.nc, job.plan_id)

                    async def sync() -> None:  # holding the backup's lock: see CatalogIndex
                        await catalog.sync(repo)

                    sink = UploadSink(self.nc, job.id, job.plan_id, max_in_flight=self.max_in_flight,
                                      cancel=ctx.cancel)

                    def progress(p: Progress) -> None:
                        ctx.update(files_done=p.files_done, bytes_done=p.bytes_done,
                                   files_total=p.files_total, bytes_total=p.bytes_total)

                    cache = os.path.join(self.cache_dir, job.plan_id) if self.cache_dir else None
                    snapshot_id, snap = await backup(repo, plan.sources, sink=sink,
                                                     known=CatalogKnownBlobs(self.nc, job.plan_id),
                                                     progress=progress, cancel=ctx.cancel, cache_dir=cache,
                                                     plan=job.plan_id, in_flight=ARCHIVER_IN_FLIGHT,
                                                     excludes=ExcludeOptions(
                                                         patterns=plan.excludes, files=plan.exclude_files,
                                                         caches=plan.exclude_caches,
                                                         one_file_system=plan.one_file_system),
                                                     on_locked=sync)
                    await sink.close()
                    await hold("backup.finish")
                    log.info("job %s: waited %.2f s for the upload window, %.2f s for batch replies; "
                             "peak %d MiB unconfirmed", job.id, sink.waited_for_room, sink.waited_for_replies,
                             sink.peak_unconfirmed_bytes >> 20)
                finally:
                    await repo.close()
            except (BackupCanceled, asyncio.CancelledError) as exc:
                if sink is not None:
                    with contextlib.suppress(Exception):
                        await sink.close(discard=True)
                if isinstance(exc, asyncio.CancelledError) and not ctx.cancel.is_set():
                    if hooks is not None:  # service shutting down: the job is redelivered, but what
                        await hooks.after("canceled")  # the pre-command began is undone now
                    raise
                await finish("canceled", "canceled by user")
                return
            except Exception as exc:
                if sink is not None:
                    with contextlib.suppress(Exception):
                        await sink.close(discard=True)
                reason = _reason(exc)
                if ctx.cancel.is_set():
                    await finish("canceled", "canceled by user")
                else:
                    log.warning("job %s failed: %s", job.id, reason)
                    await finish("failed", reason if not isinstance(exc, HookFailed) else str(exc))
                return
            info = SnapshotInfo(
                id=snapshot_id, started_at=datetime.fromisoformat(snap.time),
                finished_at=datetime.fromisoformat(snap.finished), size=snap.stats.size,
                added_size=snap.stats.added_size, files=snap.stats.files, status="completed",
            )
            await finish("completed", snapshot=info)
            log.info("job %s: snapshot %s (%d files, %d bytes added)", job.id, snapshot_id[:12],
                     snap.stats.files, snap.stats.added_size)


def _reason(exc: BaseException) -> str:
    """A failed job's error: the clear message of an expected failure, the type of a bug."""
    from timevault.core.errors import TimeVaultError

    if isinstance(exc, ServiceError):
        return exc.message
    if isinstance(exc, TimeVaultError) and str(exc):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _keep_alive(msg: Msg | None) -> Callable[[], Awaitable[None]]:
    """The heartbeat's extra: keep the work item from being redelivered while the job runs."""

    async def keep_alive() -> None:
        if msg is not None:
            with contextlib.suppress(Exception):
                await msg.in_progress()

    return keep_alive
