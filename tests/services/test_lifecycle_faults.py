"""A year of backups, the hard parts, each on a stack of its own: the snapshotter killed in the
middle of the services' prune, and a location whose disk is full (checked before a backup
starts; thinned when the plan allows).

A real disk cannot be filled on demand, so the snapshotter is told a capacity
(``TIMEVAULT_TEST_LOCATION_CAPACITY``): its free space is that minus what the folder really
holds, so what thinning deletes really counts.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from tests.services.conftest import ServiceProc
from tests.services.helpers import PASSWORD, wait_job
from tests.services.test_crashes import MiB, Stack
from timevault.core.checker import check
from timevault.core.repository import Repository
from timevault.core.restorer import restore
from timevault.core.storage import LocalStorage
from timevault.proto import subjects
from timevault.proto.jobs import Job, JobCreate, JobList, JobListRequest
from timevault.proto.plans import (
    Location,
    Plan,
    PlanCreate,
    PlanDetail,
    PlanList,
    PlanListRequest,
    PlanRef,
    PlanUpdate,
    PlanUpdateRequest,
    Retention,
    Schedule,
)
from timevault.services.common import rpc

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def start_snapshotter(s: Stack, **env: str) -> None:
    """(Re)start the stack's snapshotter with `env` on top of the stack's."""
    assert s.services is not None
    old = s.procs.get("snapshotter")
    if old is not None:
        old.stop()
    proc = ServiceProc("snapshotter", s.nats.url, s.root, "--ack-wait", "3", "--reserve", "0",
                       "--data-dir", str(s.root / "snap-data"), env={**(s.services.env or {}), **env}).start()
    s.services.procs.append(proc)
    s.procs["snapshotter"] = proc


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, NATS]]:
    s = Stack(tmp_path / "stack")
    s.start()
    nc = await nats.connect(s.nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    await rpc.request_retrying(nc, subjects.PLAN_LIST, PlanListRequest(), PlanList, timeout=1, give_up_after=20)
    yield s, nc
    await nc.close()
    s.stop()


async def make_plan(nc: NATS, name: str, source: Path, location: Path, retention: Retention) -> Plan:
    req = PlanCreate(name=name, sources=[str(source)], location=Location(type="local", path=str(location)),
                     schedule=Schedule(frequency="daily", time="03:00"), password=PASSWORD,
                     password_confirm=PASSWORD, retention=retention)
    return await rpc.request(nc, subjects.PLAN_CREATE, req, Plan, timeout=30)


async def settle(nc: NATS, plan_id: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while (await rpc.request_retrying(nc, subjects.JOB_LIST, JobListRequest(plan=plan_id, active=True),
                                      JobList)).jobs:
        assert time.monotonic() < deadline, "jobs still running"
        await asyncio.sleep(0.2)


async def backup(nc: NATS, plan_id: str) -> Job:
    await settle(nc, plan_id)
    job = await rpc.request(nc, subjects.JOB_CREATE, JobCreate(plan=plan_id), Job)
    return await wait_job(nc, job.id, 120)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def verify(location: Path, source: Path, snapshot_id: str, tmp_path: Path) -> None:
    """check --read-data clean, and the snapshot restores `source` as it is now, byte for byte."""
    repo = await Repository.open(LocalStorage(location), PASSWORD)
    try:
        checked = await check(repo, read_data=True)
        assert checked.errors == [], checked.errors
        target = tmp_path / f"out-{snapshot_id[:8]}"
        assert (await restore(repo, snapshot_id, str(target))).errors == []
        assert tree(target / str(source).lstrip("/")) == tree(source)
    finally:
        await repo.close()


@pytest.mark.parametrize("point", ["prune.indexed", "prune.deleting"])
async def test_kill_9_of_the_snapshotter_in_the_middle_of_a_prune(stack: tuple[Stack, NATS], tmp_path: Path,
                                                                  point: str) -> None:
    s, nc = stack
    held = tmp_path / "held"
    start_snapshotter(s, TIMEVAULT_TEST_HOLD=point, TIMEVAULT_TEST_HOLD_FILE=str(held))
    source = tmp_path / "src"
    source.mkdir()
    location = tmp_path / "vault"
    plan = await make_plan(nc, "killed-prune", source, location, Retention(keep_last=1))
    for i in range(3):
        for old in source.glob("*.bin"):
            old.unlink()
        (source / f"gen-{i}.bin").write_bytes(os.urandom(3 * MiB))
        (source / "same.txt").write_text("unchanged\n" * 1000)
        job = await rpc.request(nc, subjects.JOB_CREATE, JobCreate(plan=plan.id), Job)
        done = await wait_job(nc, job.id, 120)
        assert done.status == "completed", done.error
        # Then the prune after it: it ends, or it holds at the point (and stays there).
        deadline = time.monotonic() + 120
        while not held.exists() and (await rpc.request(nc, subjects.JOB_LIST, JobListRequest(
                plan=plan.id, active=True), JobList)).jobs:
            assert time.monotonic() < deadline, "the prune neither ended nor held"
            await asyncio.sleep(0.1)
        if held.exists():
            break
    assert held.exists(), f"{point} never reached"
    s.procs["snapshotter"].kill()
    start_snapshotter(s)  # no hold now: the work item comes back, the job is taken over
    await settle(nc, plan.id, 180)
    jobs = await rpc.request(nc, subjects.JOB_LIST, JobListRequest(plan=plan.id), JobList)
    prunes = [job for job in jobs.jobs if job.kind == "prune"]
    assert all(job.status in ("completed", "failed") for job in prunes), prunes
    assert any(job.attempt > 1 and job.status == "completed" for job in prunes) or any(
        job.status == "failed" and job.error for job in prunes), prunes
    # Whatever the killed prune left behind goes with the next one; nothing a snapshot needs is lost.
    again = await rpc.request(nc, subjects.PLAN_PRUNE, PlanRef(plan=plan.id), Job)
    again = await wait_job(nc, again.id, 120)
    assert again.status == "completed", again.error
    detail = await rpc.request(nc, subjects.PLAN_GET, PlanRef(plan=plan.id), PlanDetail)
    (latest,) = [snap for snap in detail.snapshots if snap.status == "completed"]
    await verify(location, source, latest.id, tmp_path)
    assert folder_bytes(location) < 6 * MiB  # one backup's own data, not three


async def test_a_full_location_fails_before_starting_or_thins_the_oldest(stack: tuple[Stack, NATS],
                                                                         tmp_path: Path) -> None:
    s, nc = stack
    source = tmp_path / "src"
    source.mkdir()
    location = tmp_path / "vault"
    start_snapshotter(s, TIMEVAULT_TEST_LOCATION_CAPACITY=str(10**12))
    plan = await make_plan(nc, "full-disk", source, location, Retention(policy="none"))
    ids = []
    for i in range(3):
        for old in source.glob("*.bin"):
            old.unlink()
        (source / f"gen-{i}.bin").write_bytes(os.urandom(3 * MiB))
        done = await backup(nc, plan.id)
        assert done.status == "completed", done.error
        ids.append(done.snapshot_id)
    await settle(nc, plan.id)
    (source / "gen-2.bin").unlink()
    (source / "gen-3.bin").write_bytes(os.urandom(3 * MiB))

    # 1 MiB free, about 3 MiB needed: the backup fails before it writes anything.
    start_snapshotter(s, TIMEVAULT_TEST_LOCATION_CAPACITY=str(folder_bytes(location) + MiB))
    before = tree(location)
    refused = await backup(nc, plan.id)
    assert refused.status == "failed"
    assert refused.error and refused.error.startswith("location is full: ") and "--thin-when-full" in refused.error
    assert "nothing was written" in refused.error
    assert {k for k in tree(location) if not k.startswith("locks/")} == {k for k in before if not k.startswith("locks/")}

    # With thinning, the oldest snapshot goes (never the newest) until the backup fits.
    await rpc.request(nc, subjects.PLAN_UPDATE, PlanUpdateRequest(plan=plan.id, update=PlanUpdate(thin_when_full=True)),
                      Plan)
    thinned = await backup(nc, plan.id)
    assert thinned.status == "completed", thinned.error
    assert thinned.prune is not None and thinned.prune.forgotten == [ids[0]], thinned.prune
    assert thinned.prune.bytes_freed > 2 * MiB
    await settle(nc, plan.id)
    detail = await rpc.request(nc, subjects.PLAN_GET, PlanRef(plan=plan.id), PlanDetail)
    assert [snap.id for snap in detail.snapshots if snap.status == "completed"] == [*ids[1:], thinned.snapshot_id]
    assert thinned.snapshot_id
    await verify(location, source, thinned.snapshot_id, tmp_path)
