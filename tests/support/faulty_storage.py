"""Scripted fault injection for tests: a wrapper around any `Storage`.

After kopia's ``blobtesting/faulty.go``: a test lists the faults it wants (fail the 2nd put,
raise on names matching a pattern, truncate a read, delay a call, lose the reply after the
write happened), runs the code under test, then calls `assert_all_fired` so that a fault
which never triggered (and so tested nothing) fails the test instead of passing silently.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from timevault.core.storage.base import ObjectInfo, Payload, Storage, TransientStorageError

Method = Literal["put", "get", "stat", "list", "delete"]
ErrorSpec = BaseException | Callable[[str, str], BaseException] | None


@dataclass
class Fault:
    """One scripted fault.

    It matches a call to `method` when the call is the `on_call`-th one to that method
    (1-based; None means any) and the object name (the prefix, for list) matches the regular
    expression `name` (None means any). It fires on up to `times` matching calls (None: always).

    When it fires it first waits `delay` seconds, then:
      - with `after=False` raises `error` instead of calling the inner storage;
      - with `after=True` calls the inner storage and then raises `error` (the write happened,
        the reply was lost: the case idempotent writes exist for);
      - for get, `truncate=N` returns only the first N bytes of the real answer.
    `error` is an exception or a factory ``(method, name) -> exception``; with no error and no
    truncate the fault only delays.
    """

    method: Method
    error: ErrorSpec = None
    on_call: int | None = None
    name: str | None = None
    times: int | None = 1
    after: bool = False
    truncate: int | None = None
    delay: float = 0.0
    fired: int = field(default=0, init=False)

    def matches(self, call: int, name: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.on_call is not None and call != self.on_call:
            return False
        return self.name is None or re.search(self.name, name) is not None

    def make_error(self, name: str) -> BaseException | None:
        if self.error is None or isinstance(self.error, BaseException):
            return self.error
        return self.error(self.method, name)

    def describe(self) -> str:
        parts: list[str] = [self.method]
        if self.on_call is not None:
            parts.append(f"call #{self.on_call}")
        if self.name is not None:
            parts.append(f"name ~ {self.name!r}")
        return " ".join(parts)


def transient(method: str, name: str) -> TransientStorageError:
    """A ready-made error factory: the kind of failure `RetryingStorage` retries."""
    return TransientStorageError(f"faulty: {method} {name}: injected transient failure")


class FaultyStorage:
    """Runs `inner`, injecting the faults of `script` at the calls they match.

    It offers no batch delete, so `delete_many` on it deletes name by name and scripted
    delete faults apply to batches too.
    """

    def __init__(self, inner: Storage, script: Iterable[Fault] = ()) -> None:
        self._inner = inner
        self._faults = list(script)
        self.calls: dict[str, int] = {"put": 0, "get": 0, "stat": 0, "list": 0, "delete": 0}

    @property
    def location(self) -> str:
        return self._inner.location

    @property
    def inner(self) -> Storage:
        return self._inner

    def add(self, *faults: Fault) -> None:
        self._faults.extend(faults)

    def unfired(self) -> list[Fault]:
        """Faults that have not fired as often as scripted (`times`); always-on faults excluded."""
        return [f for f in self._faults if (f.fired < f.times if f.times is not None else f.fired == 0)]

    def assert_all_fired(self) -> None:
        missing = self.unfired()
        if missing:
            raise AssertionError("scripted faults never fired: " + "; ".join(f.describe() for f in missing))

    async def _before(self, method: Method, name: str) -> Fault | None:
        """Count the call, pick the first matching fault, apply its delay and pre-call error."""
        self.calls[method] += 1
        call = self.calls[method]
        fault = next((f for f in self._faults if f.method == method and f.matches(call, name)), None)
        if fault is None:
            return None
        fault.fired += 1
        if fault.delay:
            await asyncio.sleep(fault.delay)
        error = fault.make_error(name)
        if error is not None and not fault.after:
            raise error
        return fault

    @staticmethod
    def _after(fault: Fault | None, name: str) -> None:
        if fault is not None and fault.after:
            error = fault.make_error(name)
            if error is not None:
                raise error

    async def put(self, name: str, data: Payload) -> None:
        fault = await self._before("put", name)
        await self._inner.put(name, data)
        self._after(fault, name)

    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        fault = await self._before("get", name)
        data = await self._inner.get(name, offset, length)
        self._after(fault, name)
        if fault is not None and fault.truncate is not None:
            return data[: fault.truncate]
        return data

    async def stat(self, name: str) -> ObjectInfo:
        fault = await self._before("stat", name)
        info = await self._inner.stat(name)
        self._after(fault, name)
        return info

    async def delete(self, name: str) -> None:
        fault = await self._before("delete", name)
        await self._inner.delete(name)
        self._after(fault, name)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        fault = await self._before("list", prefix)
        count = 0
        async for info in self._inner.list(prefix):
            # With `after`, the listing breaks off after `truncate` items (default: one),
            # the way a connection dropped between pages looks.
            if fault is not None and fault.after and count >= (fault.truncate or 1):
                self._after(fault, prefix)
            yield info
            count += 1
        self._after(fault, prefix)

    async def close(self) -> None:
        await self._inner.close()
