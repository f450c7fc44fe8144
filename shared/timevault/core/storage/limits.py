"""Bounding how many storage calls are in flight: a wrapper around any `Storage`.

A backup pipeline produces packs faster than a home uplink takes them; without a bound every
pack would be in memory and on the wire at once, and S3 answers a flood with SlowDown. One
semaphore per storage caps requests (and so the bytes held by them).

Put it outside `RetryingStorage`: a call keeps its slot while it backs off, so a throttled
store sees fewer requests, not the same number retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from timevault.core.storage.base import ObjectInfo, Payload, Storage
from timevault.core.storage.batch import delete_each, supports_delete_many
from timevault.core.storage.once import supports_put_new


class LimitedStorage:
    """At most `max_concurrent` calls of `inner` run at once; the rest wait their turn."""

    def __init__(self, inner: Storage, max_concurrent: int) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._inner = inner
        self._max = max_concurrent
        self._gate = asyncio.Semaphore(max_concurrent)
        self._active = 0
        self._peak = 0

    @property
    def location(self) -> str:
        return self._inner.location

    @property
    def inner(self) -> Storage:
        return self._inner

    @property
    def max_concurrent(self) -> int:
        return self._max

    @property
    def peak(self) -> int:
        """The most calls that were ever in flight at once (for tests and metrics)."""
        return self._peak

    async def _enter(self) -> None:
        await self._gate.acquire()
        self._active += 1
        self._peak = max(self._peak, self._active)

    def _leave(self) -> None:
        self._active -= 1
        self._gate.release()

    async def put(self, name: str, data: Payload) -> None:
        await self._enter()
        try:
            await self._inner.put(name, data)
        finally:
            self._leave()

    @property
    def supports_put_new(self) -> bool:
        return supports_put_new(self._inner)

    async def put_new(self, name: str, data: Payload) -> bool:
        await self._enter()
        try:
            return await self._inner.put_new(name, data)  # type: ignore[attr-defined]
        finally:
            self._leave()

    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        await self._enter()
        try:
            return await self._inner.get(name, offset, length)
        finally:
            self._leave()

    async def stat(self, name: str) -> ObjectInfo:
        await self._enter()
        try:
            return await self._inner.stat(name)
        finally:
            self._leave()

    async def delete(self, name: str) -> None:
        await self._enter()
        try:
            await self._inner.delete(name)
        finally:
            self._leave()

    @property
    def supports_delete_many(self) -> bool:
        return supports_delete_many(self._inner)

    async def delete_many(self, names: Iterable[str]) -> None:
        batch, inner = list(names), self._inner
        if not supports_delete_many(inner):
            await delete_each(self, batch)
            return
        await self._enter()
        try:
            await inner.delete_many(batch)
        finally:
            self._leave()

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        # A slot is held per step (one page fetch), not for the whole listing: a caller that
        # gets each object while listing would otherwise deadlock with max_concurrent=1.
        listing = aiter(self._inner.list(prefix))
        try:
            while True:
                await self._enter()
                try:
                    info = await anext(listing)
                except StopAsyncIteration:
                    return
                finally:
                    self._leave()
                yield info
        finally:
            close = getattr(listing, "aclose", None)
            if close is not None:
                await close()

    async def close(self) -> None:
        await self._inner.close()
