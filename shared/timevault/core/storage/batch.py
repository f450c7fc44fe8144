"""Deleting many objects at once, on any `Storage`.

S3 deletes up to 1000 keys per request, which matters when a plan with a million objects is
deleted; a folder has no such call. `delete_many` uses the batch call when a storage has one
and falls back to bounded concurrent single deletes otherwise.

A storage offers the batch call by having ``supports_delete_many`` true and a
``delete_many(names)`` method. Wrappers pass the flag through from what they wrap, so a
wrapper never claims a batch call it would only emulate (which would, for example, let
LimitedStorage hold one slot while many single deletes run underneath).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol, TypeGuard

from timevault.core.storage.base import Storage, StorageError, TransientStorageError, check_name

DEFAULT_DELETE_CONCURRENCY = 8


class BatchDeleting(Protocol):
    """A storage with a native batch delete (see the module docstring)."""

    async def delete_many(self, names: Iterable[str]) -> None: ...


def supports_delete_many(storage: object) -> TypeGuard[BatchDeleting]:
    """Whether `storage` deletes many objects natively in few requests."""
    return bool(getattr(storage, "supports_delete_many", False))


async def delete_many(
    storage: Storage, names: Iterable[str], *, concurrency: int = DEFAULT_DELETE_CONCURRENCY
) -> None:
    """Delete every named object from `storage`; missing objects are not an error.

    Every name is checked before anything is deleted.
    """
    batch = [check_name(name) for name in names]
    if supports_delete_many(storage):
        await storage.delete_many(batch)
        return
    await delete_each(storage, batch, concurrency=concurrency)


async def delete_each(
    storage: Storage, names: Iterable[str], *, concurrency: int = DEFAULT_DELETE_CONCURRENCY
) -> None:
    """Delete objects one call each, at most `concurrency` at a time (the generic fallback).

    On failure the remaining deletes are cancelled and one error is raised, not a group:
    a permanent StorageError if there was one, else a transient one, so that a retrying
    caller can tell whether running the batch again may help.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with gate:
            await storage.delete(name)

    try:
        async with asyncio.TaskGroup() as group:
            for name in names:
                group.create_task(one(name))
    except ExceptionGroup as failed:
        errors = list(_leaves(failed))
        permanent = [e for e in errors if not isinstance(e, TransientStorageError)]
        first = (permanent or errors)[0]
        if isinstance(first, StorageError):
            raise first from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterable[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
