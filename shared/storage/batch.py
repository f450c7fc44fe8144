"""Deleting many objects at once, on any `Storage`.

S3 deletes up to 1000 keys per request, which matters when a plan with a million objects is
deleted; a folder has no such call. `delete_many` uses the batch call when a storage has one
and falls back to bounded concurrent single deletes otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from shared.storage.base import Storage, check_name

DEFAULT_DELETE_CONCURRENCY = 8


@runtime_checkable
class BatchDeleter(Protocol):
    """A storage that can delete many objects in few requests."""

    async def delete_many(self, names: Iterable[str]) -> None:
        """Delete every named object; missing ones are not an error (idempotent)."""
        ...


async def delete_many(
    storage: Storage, names: Iterable[str], *, concurrency: int = DEFAULT_DELETE_CONCURRENCY
) -> None:
    """Delete every named object from `storage`; missing objects are not an error."""
    batch = [check_name(name) for name in names]
    if isinstance(storage, BatchDeleter):
        await storage.delete_many(batch)
        return
    await delete_each(storage, batch, concurrency=concurrency)


async def delete_each(
    storage: Storage, names: Iterable[str], *, concurrency: int = DEFAULT_DELETE_CONCURRENCY
) -> None:
    """Delete objects one call each, at most `concurrency` at a time (the generic fallback)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with gate:
            await storage.delete(name)

    async with asyncio.TaskGroup() as group:
        for name in names:
            group.create_task(one(name))
