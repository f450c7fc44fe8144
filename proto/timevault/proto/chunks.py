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


class ChunkAddReply(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.chunks.add``."""

    added: int
    """How many ids were new to the index."""
