"""The chunk index in the catalog: which blob ids a plan's repository already stores (dedup)."""

from __future__ import annotations

import msgspec


class ChunkLookup(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.chunks.lookup``: which of these ids does the plan already store?"""

    plan_id: str
    """The plan (each plan is its own repository with its own keyed ids)."""
    ids: list[str]
    """Blob ids, lowercase hex; up to a few thousand per request."""


class ChunkLookupReply(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.chunks.lookup``."""

    known: list[str]
    """The subset of the asked ids that are durably stored."""


class ChunkRef(msgspec.Struct, kw_only=True, array_like=True):
    """Where one blob is stored (compact array on the wire)."""

    id: str
    """Blob id, lowercase hex."""
    pack: str
    """Pack id holding it."""
    length: int
    """Stored (encrypted) length in bytes."""


class PackRef(msgspec.Struct, kw_only=True, array_like=True):
    """A pack and its size."""

    id: str
    """Pack id."""
    size: int
    """Bytes."""


class ChunkAdd(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.chunks.add``: uploader records blobs once their pack+index are durable."""

    plan_id: str
    """The plan."""
    chunks: list[ChunkRef]
    """The blobs."""
    pack_bytes: int = 0
    """Total size of the packs written (adds to the plan's total size)."""
    job_id: str | None = None
    """The backup job they belong to."""
    packs: list[PackRef] = msgspec.field(default_factory=list)
    """The packs written, with their sizes: a pack counts towards the plan's total size once,
    however often the request is repeated (`pack_bytes` is for senders that do not set this)."""


class ChunkAddReply(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.chunks.add``."""

    added: int
    """How many ids were new to the index."""


class ChunkSync(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.chunks.sync``: before a backup deduplicates, bring the plan's chunk
    index up to date with the repository.

    `generation` is what the repository says now (the names of its ``gc/`` objects, which
    change whenever prune may have removed data). When it differs from what the catalog
    recorded, the catalog reads the repository's index and replaces the plan's chunk index
    with it: a prune behind the services' back (the CLI, another machine) or a catalog restored
    from an old copy never makes a backup rely on a blob that is gone.
    """

    plan_id: str
    """The plan."""
    generation: list[str]
    """The repository's generation, as the asking worker read it (holding its lock)."""


class ChunkSyncReply(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.chunks.sync``."""

    reconciled: bool
    """True when the chunk index was rebuilt from the repository's index."""
    blobs: int = 0
    """Blobs in the chunk index afterwards (when reconciled)."""


class ChunkUpdate(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.chunks.update``: a prune by the services changed the repository.

    Sent before the change is published in the repository: the packs that leave the index are
    dropped from the chunk index (no backup may deduplicate against them any more), the blobs
    that moved or came back are added, and the new generation is recorded — but only if the
    catalog was in sync (`expected`); otherwise it stays out of sync and the next backup
    reconciles.
    """

    plan_id: str
    """The plan."""
    removed_packs: list[str] = msgspec.field(default_factory=list)
    """Packs no longer in the index."""
    chunks: list[ChunkRef] = msgspec.field(default_factory=list)
    """Blobs now in (other) packs."""
    packs: list[PackRef] = msgspec.field(default_factory=list)
    """Packs added to the index."""
    expected: list[str] = msgspec.field(default_factory=list)
    """The generation the catalog must have recorded for `generation` to be recorded."""
    generation: list[str] = msgspec.field(default_factory=list)
    """The repository's generation once the change is published."""
    final: bool = True
    """False for the leading parts of a long change (their `chunks` only); the final part drops
    `removed_packs` and records `generation`."""


class ChunkUpdateReply(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.chunks.update``."""

    in_sync: bool
    """False when the catalog was not at `expected` (it will reconcile before the next backup)."""
