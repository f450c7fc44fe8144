"""The per-plan chunk index: which blobs a plan's repository holds (and in which pack), so a
backup uploads only what is new. Uploaders add a pack's blobs once the pack is durable."""

from __future__ import annotations

from timevault.proto.chunks import ChunkAdd, ChunkAddReply, ChunkLookup, ChunkLookupReply
from timevault.proto.errors import ServiceError
from timevault.services.catalog.context import Catalog


class ChunkIndex:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def lookup(self, req: ChunkLookup) -> ChunkLookupReply:
        ids = [_unhex(i) for i in req.ids]
        known = await self.catalog.db.known_chunks(req.plan_id, ids)
        return ChunkLookupReply(known=[i.hex() for i in ids if i in known])

    async def add(self, req: ChunkAdd) -> ChunkAddReply:
        db = self.catalog.db
        async with self.catalog.transaction():
            plan = await db.get_plan(req.plan_id)
            if plan is None or plan.deleting:
                raise ServiceError("not_found", f"no plan {req.plan_id!r}", "plan_id")
            added = await db.add_chunks(req.plan_id, [(_unhex(c.id), c.pack, c.length) for c in req.chunks])
            if req.pack_bytes:
                await db.add_total_size(req.plan_id, req.pack_bytes)
        return ChunkAddReply(added=added)


def _unhex(value: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise ServiceError("invalid", f"bad chunk id {value[:80]!r}", "ids") from exc
