"""The per-plan chunk index: which blobs a plan's repository holds (and in which pack), so a
backup uploads only what is new. Uploaders add a pack's blobs once the pack is durable.

It is a cache of the repository's index, never the truth. The repository's *generation* (the
names of its ``gc/`` objects, which change whenever prune may have removed data; see
`timevault.core.prune`) tells whether it is current: `sync`, which every backup asks for once
it holds its repository lock, rebuilds it from the repository's index when the generation is
not the one recorded. The services' own prune keeps it current with `update` before it
publishes what it removed.
"""

from __future__ import annotations

import logging

import msgspec

from timevault.proto.chunks import (
    ChunkAdd,
    ChunkAddReply,
    ChunkLookup,
    ChunkLookupReply,
    ChunkSync,
    ChunkSyncReply,
    ChunkUpdate,
    ChunkUpdateReply,
)
from timevault.proto.errors import ServiceError
from timevault.proto.plans import location_url
from timevault.services.catalog import repo_ops
from timevault.services.catalog.context import Catalog
from timevault.services.catalog.credentials import CredentialStore
from timevault.services.catalog.spaces import space_token_for

log = logging.getLogger(__name__)


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
            if req.packs:
                # A pack counts once: a request repeated after a lost reply adds nothing.
                grown = await db.add_packs(req.plan_id, [(p.id, p.size) for p in req.packs])
                if grown:
                    await db.add_total_size(req.plan_id, grown)
            elif req.pack_bytes:
                await db.add_total_size(req.plan_id, req.pack_bytes)
        return ChunkAddReply(added=added)

    async def sync(self, req: ChunkSync) -> ChunkSyncReply:
        """Rebuild the plan's chunk index from the repository unless it matches `req.generation`."""
        db = self.catalog.db
        plan = await self.catalog.plan(req.plan_id)
        lifecycle = await db.get_lifecycle(plan.id)
        if lifecycle.generation is not None and lifecycle.generation == sorted(req.generation):
            return ChunkSyncReply(reconciled=False)
        # Read outside the transaction (it may take a while); the generation is read before the
        # index, so the rows are at least as new as the generation recorded with them.
        credentials = await CredentialStore(db).get(plan.id)
        url = location_url(plan.location)
        chunks, packs, generation = await repo_ops.index_rows(url, plan.write_keys, credentials,
                                                              space_token=await space_token_for(db, url))
        async with self.catalog.transaction() as tx:
            current = await db.get_plan(plan.id)
            if current is None or current.deleting:
                raise ServiceError("not_found", f"no plan {req.plan_id!r}", "plan_id")
            await db.replace_chunks(plan.id, chunks, packs)
            lifecycle = await db.get_lifecycle(plan.id)
            await db.save_lifecycle(plan.id, msgspec.structs.replace(lifecycle, generation=generation))
            await tx.event(plan.id, "reconciled", "the repository changed behind the services' back (a prune "
                           f"elsewhere?): the dedup index was read again from it ({len(chunks)} blobs)")
        log.info("plan %s: chunk index reconciled with the repository (%d blobs)", plan.id, len(chunks))
        return ChunkSyncReply(reconciled=True, blobs=len(chunks))

    async def update(self, req: ChunkUpdate) -> ChunkUpdateReply:
        """The services' prune is about to publish a change: drop what leaves the index first."""
        db = self.catalog.db
        async with self.catalog.transaction():
            plan = await db.get_plan(req.plan_id)
            if plan is None:
                raise ServiceError("not_found", f"no plan {req.plan_id!r}", "plan_id")
            await db.put_chunks(plan.id, [(_unhex(c.id), c.pack, c.length) for c in req.chunks])
            grown = await db.add_packs(plan.id, [(p.id, p.size) for p in req.packs])
            dropped = await db.drop_packs(plan.id, req.removed_packs)
            await db.add_total_size(plan.id, grown - dropped)
            lifecycle = await db.get_lifecycle(plan.id)
            in_sync = lifecycle.generation is not None and lifecycle.generation == sorted(req.expected)
            if in_sync and req.final:
                await db.save_lifecycle(plan.id, msgspec.structs.replace(lifecycle,
                                                                         generation=sorted(req.generation)))
        return ChunkUpdateReply(in_sync=in_sync)


def _unhex(value: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise ServiceError("invalid", f"bad chunk id {value[:80]!r}", "ids") from exc
