"""The reaper: fails jobs whose worker went silent (no heartbeat) or that nobody picked up."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from timevault.services.catalog.context import Catalog
from timevault.services.catalog.jobs import Jobs, worker_kind
from timevault.services.common.util import utcnow

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, catalog: Catalog, jobs: Jobs) -> None:
        self.catalog = catalog
        self.jobs = jobs

    async def run(self) -> None:
        """Reap every `reap_every` seconds until canceled; a failed round is logged, not fatal."""
        while True:
            await asyncio.sleep(self.catalog.options.reap_every)
            try:
                await self.reap()
            except Exception:
                log.exception("reaper failed")

    async def reap(self) -> None:
        options = self.catalog.options
        now = time.time()
        for job, cancel_requested in await self.catalog.db.stale_jobs("running", now - options.job_timeout,
                                                                      by_heartbeat=True):
            if cancel_requested:
                await self.jobs.end(job, "canceled", "canceled (the worker did not confirm)")
            else:
                await self.jobs.end(job, "failed", f"the {worker_kind(job)} stopped responding "
                                    f"(no heartbeat for {options.job_timeout:g}s)")
        cutoff = utcnow() - timedelta(seconds=options.pending_timeout)
        for job in await self.catalog.db.list_jobs(statuses=("pending",), limit=1000):
            if job.created_at < cutoff:
                await self.jobs.end(job, "failed", "no snapshotter picked up the job in time")
