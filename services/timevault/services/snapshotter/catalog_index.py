"""Keeping the catalog's chunk index in step with the repository, from the worker's side.

`sync` runs once a backup (or a prune) holds its repository lock, before anything is
deduplicated: it tells the catalog the repository's generation, and the catalog rebuilds the
plan's chunk index from the repository's index if it does not match (a prune behind the
services' back). `publish` is the services' own prune telling the catalog what leaves the index
before the repository says so (`timevault.core.prune.CacheUpdate`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nats.aio.client import Client as NATS

from timevault.proto import subjects
from timevault.proto.chunks import ChunkRef, ChunkSync, ChunkSyncReply, ChunkUpdate, ChunkUpdateReply, PackRef
from timevault.services.common import rpc

if TYPE_CHECKING:
    from timevault.core.prune import CacheUpdate
    from timevault.core.repository import Repository

# Chunk rows per message: a move of many blobs goes in parts well below NATS' payload limit.
BATCH = 2000
# Reading a large repository's index for a reconcile may take a while.
SYNC_TIMEOUT = 300.0


class CatalogIndex:
    def __init__(self, nc: NATS, plan_id: str) -> None:
        self.nc = nc
        self.plan_id = plan_id
        self.expected: list[str] = []
        self.reconciled = False

    async def sync(self, repo: Repository) -> None:
        generation = await repo.gc_generation()
        reply = await rpc.request_retrying(self.nc, subjects.CHUNKS_SYNC,
                                           ChunkSync(plan_id=self.plan_id, generation=generation),
                                           ChunkSyncReply, timeout=SYNC_TIMEOUT, give_up_after=SYNC_TIMEOUT)
        self.expected = generation
        self.reconciled = self.reconciled or reply.reconciled

    async def publish(self, update: CacheUpdate) -> None:
        chunks = [ChunkRef(id=blob.id.hex(), pack=pack.id, length=blob.length)
                  for pack in update.added for blob in pack.blobs]
        packs = [PackRef(id=pack.id, size=pack.size) for pack in update.added]
        removed = update.removed_packs
        # Parts well below NATS' payload limit; dropping and moving are each safe on their own,
        # only the final part records the generation.
        parts = [ChunkUpdate(plan_id=self.plan_id, chunks=chunks[i : i + BATCH], final=False)
                 for i in range(0, len(chunks), BATCH)]
        parts += [ChunkUpdate(plan_id=self.plan_id, removed_packs=removed[i : i + BATCH], final=False)
                  for i in range(0, len(removed), BATCH)]
        parts.append(ChunkUpdate(plan_id=self.plan_id, packs=packs, expected=self.expected,
                                 generation=update.generation))
        for part in parts:
            await rpc.request_retrying(self.nc, subjects.CHUNKS_UPDATE, part, ChunkUpdateReply)
        self.expected = update.generation
