"""Retrying transient storage failures: a wrapper around any `Storage`.

This is the one place retries happen (the S3 client's own retries are off), so the budget is
known: at most `attempts` tries per call, each bounded by `timeout`, with exponential backoff
and full jitter between them so that many clients throttled at once do not retry in step.

Only `TransientStorageError` and timeouts are retried. A missing object, an invalid name, an
access-denied answer are permanent and surface at once. Retrying is safe because every
operation in the contract is idempotent (put replaces, delete of a missing object succeeds).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

from timevault.core.storage.base import ObjectInfo, Payload, Storage, StorageError, TransientStorageError
from timevault.core.storage.batch import delete_each, supports_delete_many
from timevault.core.storage.once import supports_put_new

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_ATTEMPTS = 5
DEFAULT_BASE_DELAY = 0.25
DEFAULT_MAX_DELAY = 10.0
# Per attempt. Generous: a 16 MiB pack over a slow uplink must fit (botocore's read timeout
# catches a silent peer much sooner).
DEFAULT_TIMEOUT = 300.0


class RetryingStorage:
    """Retries transient failures of `inner` with capped exponential backoff and full jitter."""

    def __init__(
        self,
        inner: Storage,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        base_delay: float = DEFAULT_BASE_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        timeout: float | None = DEFAULT_TIMEOUT,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if base_delay < 0 or max_delay < base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        self._inner = inner
        self._attempts = attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._timeout = timeout
        self._sleep = sleep
        self._rng = rng

    @property
    def location(self) -> str:
        return self._inner.location

    @property
    def inner(self) -> Storage:
        return self._inner

    def backoff(self, failures: int) -> float:
        """Delay after the `failures`-th consecutive failure: uniform in [0, min(max, base·2^(n-1))]."""
        cap = min(self._max_delay, self._base_delay * (2 ** (failures - 1)))
        return self._rng() * cap

    def _transient(self, op: str, name: str, exc: BaseException) -> TransientStorageError:
        if isinstance(exc, TransientStorageError):
            return exc
        return TransientStorageError(f"{self.location}: {op} {name}: no answer within {self._timeout:g} s")

    def _exhausted(self, op: str, name: str, attempts: int, last: TransientStorageError) -> StorageError:
        cause = str(last)
        # The cause usually starts with the same "location: op name" context; do not repeat it.
        for head in (f"{self.location}: {op} {name}: ", f"{self.location}: "):
            if cause.startswith(head):
                cause = cause[len(head) :]
                break
        return StorageError(f"{self.location}: {op} {name}: failed after {attempts} attempts: {cause}")

    async def _call(self, op: str, name: str, fn: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self._attempts + 1):
            try:
                async with asyncio.timeout(self._timeout):
                    return await fn()
            except (TransientStorageError, TimeoutError) as exc:
                last = self._transient(op, name, exc)
                if attempt == self._attempts:
                    raise self._exhausted(op, name, attempt, last) from last
                delay = self.backoff(attempt)
                log.warning("%s; attempt %d of %d, retrying in %.2f s", last, attempt, self._attempts, delay)
                await self._sleep(delay)
        raise AssertionError("unreachable")

    async def put(self, name: str, data: Payload) -> None:
        await self._call("put", name, lambda: self._inner.put(name, data))

    @property
    def supports_put_new(self) -> bool:
        return supports_put_new(self._inner)

    async def put_new(self, name: str, data: Payload) -> bool:
        # A retry after a lost reply finds the object made by the first try: False, correctly.
        return await self._call("put", name, lambda: self._inner.put_new(name, data))  # type: ignore[attr-defined]

    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return await self._call("get", name, lambda: self._inner.get(name, offset, length))

    async def stat(self, name: str) -> ObjectInfo:
        return await self._call("stat", name, lambda: self._inner.stat(name))

    async def delete(self, name: str) -> None:
        await self._call("delete", name, lambda: self._inner.delete(name))

    @property
    def supports_delete_many(self) -> bool:
        return supports_delete_many(self._inner)

    async def delete_many(self, names: Iterable[str]) -> None:
        batch = list(names)
        inner = self._inner
        if supports_delete_many(inner):
            await self._call("delete", f"{len(batch)} objects", lambda: inner.delete_many(batch))
        else:
            await delete_each(self, batch)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """List with retries; after a failure the listing restarts and skips names already given.

        The attempt budget resets whenever a try made progress, so a long listing that hits
        an occasional error still completes, while a listing that keeps failing stops.
        """
        label = prefix or "(all)"
        seen: set[str] = set()
        failures = 0
        while True:
            progressed = False
            listing = aiter(self._inner.list(prefix))
            try:
                while True:
                    try:
                        async with asyncio.timeout(self._timeout):
                            info = await anext(listing)
                    except StopAsyncIteration:
                        return
                    if info.name not in seen:
                        seen.add(info.name)
                        progressed = True
                        yield info
            except (TransientStorageError, TimeoutError) as exc:
                last = self._transient("list", label, exc)
                failures = 1 if progressed else failures + 1
                if failures >= self._attempts:
                    raise self._exhausted("list", label, failures, last) from last
                delay = self.backoff(failures)
                log.warning("%s; attempt %d of %d, retrying in %.2f s", last, failures, self._attempts, delay)
            finally:
                close = getattr(listing, "aclose", None)
                if close is not None:
                    await close()
            await self._sleep(delay)

    async def close(self) -> None:
        await self._inner.close()
