"""Free space at a local location, checked before a backup starts.

A backup that runs out of space fails half way, with whatever error the disk gives. So before
a backup to a local folder the snapshotter compares the free space with what the backup will
probably add (the most the plan's recent backups added; for a first backup the size of its
sources) plus a reserve. Too little: with the plan's ``thin_when_full`` it does what Time Machine
does and forgets the oldest snapshots (never the newest) and prunes, one at a time, until there
is room; otherwise the backup fails before it starts, saying how much is free and needed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from timevault.core.prune import PruneOptions, prune
from timevault.core.repository import Repository
from timevault.core.repository.history import CONTRADICTS
from timevault.proto.errors import ServiceError
from timevault.proto.jobs import PruneSummary
from timevault.proto.plans import PlanDetail
from timevault.services.snapshotter.catalog_index import CatalogIndex
from timevault.services.snapshotter.pruning import add_result

RESERVE = 64 * 1024 * 1024
"""Bytes a backup leaves free on the location's disk (``--reserve`` of the snapshotter; at most 5 %
of the disk)."""
CAPACITY_ENV = "TIMEVAULT_TEST_LOCATION_CAPACITY"
"""Tests only: the location's disk holds this many bytes (free = this − what the folder holds),
since a real disk cannot be filled on demand. Wraps the real folder: what thinning deletes counts."""
RECENT = 5


@dataclass
class Space:
    free: int
    needed: int
    reserve: int

    @property
    def enough(self) -> bool:
        return self.free >= self.needed


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _folder_bytes(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def free_bytes(path: str) -> int:
    capacity = os.environ.get(CAPACITY_ENV)
    if capacity:
        return int(capacity) - _folder_bytes(path)
    probe = path
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)  # a location not created yet: its disk is its parent's
    return shutil.disk_usage(probe).free


def _source_bytes(sources: list[str]) -> int:
    total = 0
    for source in sources:
        for dirpath, _dirs, files in os.walk(source):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    continue
        if os.path.isfile(source):
            total += os.lstat(source).st_size
    return total


def capacity_bytes(path: str) -> int:
    capacity = os.environ.get(CAPACITY_ENV)
    if capacity:
        return int(capacity)
    probe = path
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return shutil.disk_usage(probe).total


async def measure(plan: PlanDetail, reserve: int) -> Space:
    assert plan.location.path is not None
    completed = [s for s in plan.snapshots if s.status == "completed"]
    if completed:
        estimate = max(s.added_size for s in completed[-RECENT:])
    else:
        estimate = await asyncio.to_thread(_source_bytes, plan.sources)
    # A small disk (a USB stick, a test's tmpfs) keeps a reserve in proportion: 5 % at most.
    kept = min(reserve, await asyncio.to_thread(capacity_bytes, plan.location.path) // 20)
    return Space(await asyncio.to_thread(free_bytes, plan.location.path), estimate + kept, kept)


async def ensure_space(nc: NATS, repo: Repository, plan: PlanDetail, *, reserve: int = RESERVE,
                       summary: PruneSummary) -> None:
    """Raise ServiceError("failed") unless the location has room for the backup (thinning first when
    the plan allows); what thinning forgot and freed goes into `summary`."""
    if plan.location.type != "local" or not plan.location.path:
        return
    space = await measure(plan, reserve)
    if space.enough:
        return
    where = plan.location.path
    if not plan.thin_when_full:
        raise ServiceError(
            "failed",
            f"location is full: {where} has {_human(space.free)} free, about {_human(space.needed)} is needed "
            f"(what recent backups added, plus {_human(space.reserve)} kept free); nothing was written. Free some "
            f"space, or let the plan thin its oldest snapshots when full (`timevault plan update {plan.name!r} "
            "--thin-when-full`)")
    catalog = CatalogIndex(nc, plan.id)
    await catalog.sync(repo)
    summary.retention = "thinning: the location was full"
    while not space.enough:
        history, snapshots = await repo.load_history([])
        ordered = sorted((s.time, sid) for sid, s in snapshots.items() if history.status.get(sid) != CONTRADICTS)
        if len(ordered) <= 1:
            break  # the newest snapshot is never thinned
        oldest = ordered[0][1]
        await repo.forget_snapshots([oldest], "thinned: the location was full")
        summary.forgotten.append(oldest)
        result = await prune(repo, PruneOptions(on_publish=catalog.publish))
        add_result(summary, result)
        if result.packs_pending:
            break  # a backup elsewhere holds the data back: forgetting more would free nothing now
        space = await measure(plan, reserve)
    if not space.enough:
        raise ServiceError(
            "failed",
            f"location is full: {where} has {_human(space.free)} free even after thinning "
            f"{len(summary.forgotten)} old snapshot(s), about {_human(space.needed)} is needed; nothing was written")
