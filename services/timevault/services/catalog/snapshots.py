"""A plan's snapshots as the catalog recorded them: listed, or found by id, prefix or ``latest``."""

from __future__ import annotations

from timevault.proto.errors import ServiceError
from timevault.proto.plans import SnapshotInfo, SnapshotList, SnapshotListRequest, SnapshotRef
from timevault.services.catalog.context import Catalog


class Snapshots:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def list_snapshots(self, req: SnapshotListRequest) -> SnapshotList:
        row = await self.catalog.plan(req.plan)
        return SnapshotList(snapshots=await self.catalog.db.list_snapshots(row.id))

    async def get(self, req: SnapshotRef) -> SnapshotInfo:
        row = await self.catalog.plan(req.plan)
        done = [s for s in await self.catalog.db.list_snapshots(row.id) if s.status == "completed"]
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
