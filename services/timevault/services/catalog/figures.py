"""``tv.catalog.stats``: job counts, bytes and durations for monitoring (the gateway's ``/metrics``)."""

from __future__ import annotations

from timevault.proto.stats import DURATION_BUCKETS, CatalogStats, CatalogStatsRequest, JobFigures
from timevault.services.catalog.context import Catalog


class Figures:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def stats(self, _req: CatalogStatsRequest) -> CatalogStats:
        db = self.catalog.db
        rows = await db.job_figures(DURATION_BUCKETS)
        jobs = [JobFigures(kind=str(r[0]), status=str(r[1]), count=int(r[2]),
                           bytes_done=int(r[3]), added_size=int(r[4]),
                           duration_sum=float(r[5]), duration_count=int(r[6]),
                           duration_buckets=[int(v) for v in r[7:]])
                for r in rows]
        return CatalogStats(plans=await db.plan_count(), jobs=jobs, buckets=list(DURATION_BUCKETS))
