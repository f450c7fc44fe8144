"""Named points where a test can pause a service: deterministic moments for fault injection.

Off unless ``TIMEVAULT_TEST_HOLDS`` names a folder (the fault suite sets it for `timevault up`);
then `hold` costs one dictionary update. A test creates ``<folder>/<point>`` (its content: from
which arrival on to hold, default 1); a service reaching that point writes
``<folder>/<point>.reached`` and waits, beating its job heartbeat as usual, until the test
removes the file or kills the process. Points: ``backup.start`` (a claimed job, nothing read),
``upload.record`` (a pack and its index written, the catalog not yet told), ``backup.finish``
(the snapshot written to the repository, not yet reported), ``restore.start``, ``restore.read``
(a data pack about to be read) and ``restore.finish`` (files in place, not yet reported).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

_FOLDER = os.environ.get("TIMEVAULT_TEST_HOLDS")
_arrivals: dict[str, int] = {}


def enabled() -> bool:
    return bool(_FOLDER)


async def hold(point: str) -> None:
    """Wait here while the test holds `point` (returns at once when holds are off)."""
    if not _FOLDER:
        return
    _arrivals[point] = arrival = _arrivals.get(point, 0) + 1
    gate = Path(_FOLDER) / point
    try:
        start = int(gate.read_text().strip() or "1")
    except (OSError, ValueError):
        return
    if arrival < start:
        return
    with open(gate.with_name(point + ".reached"), "a") as reached:  # noqa: ASYNC230 - a test-only marker
        reached.write(f"{os.getpid()} {arrival}\n")
    while gate.exists():  # noqa: ASYNC110 - the test removes a file; nothing to await
        await asyncio.sleep(0.02)


class HeldReads:
    """A storage wrapper that holds `point` before each read of a data pack (a restore mid-way)."""

    def __init__(self, inner: Any, point: str) -> None:
        self._inner = inner
        self._point = point

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("data/"):
            await hold(self._point)
        data: bytes = await self._inner.get(name, offset, length)
        return data

    def list(self, prefix: str = "") -> AsyncIterator[Any]:
        listing: AsyncIterator[Any] = self._inner.list(prefix)
        return listing


def held_reads(storage: Any, point: str) -> Any:
    """`storage`, wrapped with `HeldReads` only when holds are on."""
    return HeldReads(storage, point) if _FOLDER else storage
