"""kill -9 the uploader, then the snapshotter, then nats-server in the middle of backups.

After each restart the job completes or fails with a reason (never stuck running), no snapshot
is half-visible (every completed snapshot restores byte for byte), and later backups reuse what
was uploaded (the stored total stays close to the unique data). Plan delete during a running
backup leaves nothing behind in the location.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from tests.services.conftest import ServiceProc, Services
from tests.services.helpers import PASSWORD, create_plan, wait_job
from tests.support.holds import Holds
from timevault.proto import subjects
from timevault.proto.errors import ServiceError
from timevault.proto.jobs import Job, JobCreate, JobRef, RestoreRequest
from timevault.proto.plans import PlanDeleted, PlanDetail, PlanList, PlanListRequest, PlanRef
from timevault.services.common import rpc
from timevault.services.common.natsd import NatsServer

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]
MiB = 1024 * 1024


class Stack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.nats = NatsServer(root / "nats")
        self.services: Services | None = None
        self.procs: dict[str, ServiceProc] = {}
        # Services pause at named points on request, so each kill lands while the job runs.
        self.holds = Holds(root / "holds")
        self.holds.folder.mkdir(parents=True)

    def start(self) -> None:
        self.nats.start()
        self.services = Services(self.nats.url, self.root, env={"TIMEVAULT_TEST_HOLDS": str(self.holds.folder)})
        self.procs["catalog"] = self.services.start(
            "catalog", "--db", str(self.root / "catalog.db"), "--job-timeout", "8", "--reap-every", "0.5",
            "--delete-wait", "30", "--test-weak-kdf")
        self.procs["uploader"] = self.services.start("uploader", "--pack-size", str(2 * MiB))
        self.procs["snapshotter"] = self.start_snapshotter()
        self.procs["restorer"] = self.services.start("restorer")

    def start_snapshotter(self) -> ServiceProc:
        assert self.services is not None
        # A small in-flight bound makes the backup flush often, so kills land mid-job.
        return self.services.start("snapshotter", "--ack-wait", "3", "--max-in-flight", str(2 * MiB),
                                   "--data-dir", str(self.root / "snap-data"))

    def restart(self, name: str) -> None:
        assert self.services is not None
        self.procs[name] = self.start_snapshotter() if name == "snapshotter" else self.services.start(
            name, *(["--pack-size", str(2 * MiB)] if name == "uploader" else []))

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        if self.services:
            self.services.stop_all()
        self.nats.stop()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, NATS]]:
    s = Stack(tmp_path / "stack")
    s.start()
    nc = await nats.connect(s.nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    await rpc.request_retrying(nc, subjects.PLAN_LIST, PlanListRequest(), PlanList, timeout=1, give_up_after=20)
    yield s, nc
    await nc.close()
    s.stop()


def _fill(folder: Path, tag: str, files: int = 12, size: int = 3 * MiB) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / f"{tag}-{i}.bin").write_bytes(os.urandom(size))




def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


async def test_kill_uploader_snapshotter_and_nats_mid_backup(stack: tuple[Stack, NATS], tmp_path: Path) -> None:
    s, nc = stack
    src = tmp_path / "src"
    _fill(src, "a")
    plan = await create_plan(nc, "crashy", [src], tmp_path / "repo")
    states: dict[str, dict[str, bytes]] = {}  # job id → source state it backed up
    outcomes: list[Job] = []

    for victim, tag in (("uploader", "b"), ("snapshotter", "c"), ("nats", "d")):
        # Enough new data that the backup is still running when the victim dies (backups of
        # 40 MiB finished within the 0.4 s this test used to wait).
        _fill(src, tag, files=20, size=4 * MiB)
        # The uploader holds once its first pack is written: the backup is mid-way, for sure.
        s.holds.set("upload.record")
        job = await rpc.request(nc, subjects.JOB_CREATE, JobCreate(plan=plan.id), Job)
        states[job.id] = _tree_bytes(src)
        await asyncio.to_thread(s.holds.wait, "upload.record")
        seen = await rpc.request(nc, subjects.JOB_GET, JobRef(job_id=job.id), Job)
        assert seen.status == "running", f"{victim}: job ended before the kill: {seen}"
        if victim == "nats":
            s.nats.kill()
            s.holds.release()
            await asyncio.sleep(1)
            s.nats.start()
        else:
            s.procs[victim].kill()
            s.holds.release()
            await asyncio.sleep(0.5)
            s.restart(victim)
        final = await rpc.request_retrying(nc, subjects.JOB_GET, JobRef(job_id=job.id), Job, give_up_after=20)
        final = await wait_job(nc, job.id, 120)
        assert final.status in ("completed", "failed"), final
        if final.status == "failed":
            assert final.error, "a failed job must say why"
        outcomes.append(final)

    # The next backup after the crashes completes and reuses what was uploaded.
    last = await rpc.request(nc, subjects.JOB_CREATE, JobCreate(plan=plan.id), Job)
    states[last.id] = _tree_bytes(src)
    last = await wait_job(nc, last.id, 120)
    assert last.status == "completed", last.error
    detail = await rpc.request(nc, subjects.PLAN_GET, PlanRef(plan=plan.id), PlanDetail)
    assert last.added_size < 2 * MiB, f"nothing should be new, yet {last.added_size} bytes were added"
    unique = sum(len(v) for v in _tree_bytes(src).values())
    assert detail.total_size < unique * 1.35, (detail.total_size, unique)

    # No half-visible snapshot: every completed one restores exactly the state it backed up.
    completed = [snap for snap in detail.snapshots if snap.status == "completed"]
    assert len(completed) == 1 + sum(1 for o in outcomes if o.status == "completed")
    for snap in completed:
        if snap.job_id not in states:
            continue
        out = tmp_path / f"out-{snap.id[:8]}"
        job = await rpc.request(nc, subjects.RESTORE_START, RestoreRequest(
            plan=plan.id, snapshot=snap.id, target=str(out), password=PASSWORD), Job, timeout=30)
        job = await wait_job(nc, job.id, 60)
        assert job.status == "completed", job.error
        restored_root = next(p.parent for p in out.rglob("a-0.bin"))
        assert _tree_bytes(restored_root) == states[snap.job_id]
        shutil.rmtree(out)


async def test_plan_delete_during_running_backup_leaves_nothing(stack: tuple[Stack, NATS], tmp_path: Path) -> None:
    s, nc = stack
    src = tmp_path / "src"
    _fill(src, "x", files=16)
    location = tmp_path / "repo"
    plan = await create_plan(nc, "doomed", [src], location)
    s.holds.set("upload.record")  # the job runs, a pack is written, until the delete has begun
    job = await rpc.request(nc, subjects.JOB_CREATE, JobCreate(plan=plan.id), Job)
    await asyncio.to_thread(s.holds.wait, "upload.record")
    seen = await rpc.request(nc, subjects.JOB_GET, JobRef(job_id=job.id), Job)
    assert seen.status == "running"
    assert any(p.is_file() for p in (location / "data").rglob("*"))
    deleting = asyncio.create_task(rpc.request(nc, subjects.PLAN_DELETE, PlanRef(plan=plan.id), PlanDeleted,
                                               timeout=60))
    for _ in range(200):  # the catalog marks the plan deleting and cancels the job, then waits for it
        canceling = await rpc.request(nc, subjects.PLAN_LIST, PlanListRequest(), PlanList)
        if plan.id not in {p.id for p in canceling.plans}:
            break
        await asyncio.sleep(0.02)
    s.holds.release()
    deleted = await deleting
    assert deleted.deleted_objects > 0
    await asyncio.sleep(1.5)  # anything still in flight would land now
    assert [str(p) for p in location.rglob("*")] == []
    # The job was canceled first, then removed with the plan's other rows.
    with pytest.raises(ServiceError) as info:
        await rpc.request(nc, subjects.JOB_GET, JobRef(job_id=job.id), Job)
    assert info.value.code == "not_found"
    listed = await rpc.request(nc, subjects.PLAN_LIST, PlanListRequest(), PlanList)
    assert plan.id not in {p.id for p in listed.plans}
    assert "Traceback" not in s.procs["snapshotter"].output()
