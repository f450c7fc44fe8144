"""What every worker does around a job: heartbeat/progress events, cancel signal, final report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from timevault.proto import subjects, wire
from timevault.proto.errors import ServiceError
from timevault.proto.jobs import Job, JobFinish, JobLog, JobLogged, JobProgress, PruneSummary, capped_warnings
from timevault.proto.plans import SnapshotInfo
from timevault.services.common import rpc
from timevault.services.common.util import utcnow

log = logging.getLogger(__name__)
HEARTBEAT_EVERY = 1.0


class JobContext:
    """Publishes `JobProgress` (the heartbeat) every second and sets `cancel` on a cancel signal.

    `on_beat` runs with each heartbeat (the snapshotter extends its JetStream ack deadline there).
    """

    def __init__(self, nc: NATS, job: Job, worker: str,
                 on_beat: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.nc = nc
        self.job = job
        self.worker = worker
        self.cancel = asyncio.Event()
        self.progress = JobProgress(job_id=job.id, worker=worker, ts=utcnow())
        self._on_beat = on_beat
        self._started = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None

    async def __aenter__(self) -> JobContext:
        async def on_cancel(_msg: Msg) -> None:
            log.info("job %s: cancel requested", self.job.id)
            self.cancel.set()

        self._sub = await self.nc.subscribe(subjects.job_cancel(self.job.id), cb=on_cancel)
        self._task = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    def update(self, *, files_done: int, bytes_done: int, files_total: int | None, bytes_total: int | None,
               added_size: int = 0) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-3)
        self.progress = JobProgress(
            job_id=self.job.id, worker=self.worker, ts=utcnow(), files_done=files_done,
            bytes_done=bytes_done, files_total=files_total or 0, bytes_total=bytes_total or 0,
            rate=round(bytes_done / elapsed, 1), added_size=added_size,
        )

    async def _beat(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a NATS outage must not kill the job
                self.progress.ts = utcnow()
                await self.nc.publish(subjects.job_progress(self.job.id), wire.encode(self.progress))
                if self._on_beat is not None:
                    await self._on_beat()
            await asyncio.sleep(HEARTBEAT_EVERY)

    async def log(self, lines: list[str], kind: str = "log") -> None:
        """Add `lines` to the job's log (best effort: a lost line must not fail the job)."""
        if not lines:
            return
        try:
            await rpc.request(self.nc, subjects.JOB_LOG, JobLog(job_id=self.job.id, worker=self.worker,
                                                                lines=lines, kind=kind), JobLogged)
        except ServiceError as exc:
            log.warning("job %s: cannot record %d log lines: %s", self.job.id, len(lines), exc)

    async def finish(self, status: Literal["completed", "failed", "canceled"], error: str | None = None,
                     snapshot: SnapshotInfo | None = None, warnings: list[str] | None = None,
                     prune: PruneSummary | None = None) -> Job | None:
        """Report the outcome; retried while the catalog is unreachable (e.g. NATS restarting).

        `warnings`: what a completed job could not do (a restore's lost files), capped; `prune`:
        what a prune (or a backup that thinned a full location) forgot and removed."""
        request = JobFinish(job_id=self.job.id, worker=self.worker, status=status, error=error,
                            snapshot=snapshot, progress=self.progress, warnings=capped_warnings(warnings or []),
                            prune=prune)
        try:
            # A repeated report is harmless: the catalog answers it with the finished job.
            return await rpc.request_retrying(self.nc, subjects.JOB_FINISH, request, Job, give_up_after=120)
        except ServiceError as exc:
            log.warning("job %s: cannot report %s: %s", self.job.id, status, exc)
            return None
