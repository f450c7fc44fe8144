"""End to end through real processes: plan → backup → change → backup → restore each, byte for byte."""

from __future__ import annotations

import asyncio
import filecmp
import os
import shutil
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from tests.services.conftest import ServiceProc, Services
from tests.services.helpers import PASSWORD, create_plan, wait_job
from timevault.proto import subjects
from timevault.proto.errors import ServiceError
from timevault.proto.jobs import Job, JobCreate, RestoreRequest
from timevault.proto.plans import PlanDetail, PlanList, PlanListRequest, PlanRef
from timevault.services.common import rpc
from timevault.services.common.natsd import NatsServer

pytestmark = pytest.mark.timeout(120)


def _same_tree(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only and not cmp.funny_files, (cmp.left_only, cmp.right_only)
    for name in cmp.common_files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for sub in cmp.common_dirs:
        _same_tree(a / sub, b / sub)


async def backup_now(nc: NATS, plan_id: str, seconds: float = 90) -> Job:
    job = await rpc.request(nc, subjects.JOB_CREATE, JobCreate(plan=plan_id), Job)
    return await wait_job(nc, job.id, seconds)


async def restore(nc: NATS, plan_id: str, snapshot: str, target: Path, includes: list[str] | None = None,
                  password: str = PASSWORD) -> Job:
    job = await rpc.request(nc, subjects.RESTORE_START, RestoreRequest(
        plan=plan_id, snapshot=snapshot, target=str(target), password=password, includes=includes or []),
        Job, timeout=30)
    return await wait_job(nc, job.id)


async def test_backup_change_backup_restore_each(catalog: NATS, workers: dict[str, ServiceProc],
                                                 tmp_path: Path) -> None:
    src = tmp_path / "data"
    (src / "docs" / "deep").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("hello\n" * 1000)
    (src / "docs" / "deep" / "b.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (src / "empty").mkdir()
    plan = await create_plan(catalog, "e2e", [src], tmp_path / "repo")

    first = await backup_now(catalog, plan.id)
    assert first.status == "completed", first.error
    copy1 = tmp_path / "copy1"
    shutil.copytree(src, copy1, symlinks=True)

    (src / "docs" / "a.txt").write_text("changed\n")
    (src / "new.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    os.remove(src / "docs" / "deep" / "b.bin")
    second = await backup_now(catalog, plan.id)
    assert second.status == "completed", second.error

    detail = await rpc.request(catalog, subjects.PLAN_GET, PlanRef(plan=plan.id), PlanDetail)
    assert [s.status for s in detail.snapshots] == ["completed", "completed"]
    s1, s2 = detail.snapshots
    assert (s1.id, s2.id) == (first.snapshot_id, second.snapshot_id)
    assert s1.started_at and s1.finished_at and s1.files == 2 and s1.size > 3 * 1024 * 1024
    assert s2.added_size < s1.added_size  # incremental: only the new chunks
    assert detail.total_size >= s1.added_size
    # The plan list carries what a list of plans shows, so it needs no request per plan.
    (listed,) = [p for p in (await rpc.request(catalog, subjects.PLAN_LIST, PlanListRequest(), PlanList)).plans
                 if p.id == plan.id]
    assert (listed.snapshot_count, listed.last_status, listed.last_error) == (2, "completed", None)
    assert listed.last_snapshot_at == s2.finished_at

    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    r1 = await restore(catalog, plan.id, s1.id, out1)
    assert r1.status == "completed", r1.error
    # The final counters arrive with the finish, even when the job ends between two heartbeats.
    assert (r1.files_done, r1.bytes_done) == (s1.files, s1.size), r1
    r2 = await restore(catalog, plan.id, s2.id[:12], out2)
    assert r2.status == "completed", r2.error
    restored1 = out1 / str(src).lstrip("/")
    restored2 = out2 / str(src).lstrip("/")
    if not restored1.exists():  # the core may restore source folders by their base name
        restored1, restored2 = out1 / src.name, out2 / src.name
    _same_tree(copy1, restored1)
    _same_tree(src, restored2)

    with pytest.raises(ServiceError) as info:
        await restore(catalog, plan.id, s1.id, tmp_path / "out3", password="wrong password")
    assert info.value.code == "unauthorized"
    assert "wrong password" not in workers["restorer"].output()
    assert PASSWORD not in workers["restorer"].output()


async def test_chunk_at_max_size_is_never_dropped(catalog: NATS, workers: dict[str, ServiceProc],
                                                  tmp_path: Path) -> None:
    """Incompressible data makes 4 MiB max-size chunks; they must arrive (here: 8 MB max payload)."""
    src = tmp_path / "big"
    src.mkdir()
    (src / "random.bin").write_bytes(os.urandom(12 * 1024 * 1024))
    plan = await create_plan(catalog, "bigchunks", [src], tmp_path / "repo")
    job = await backup_now(catalog, plan.id)
    assert job.status == "completed", job.error
    out = tmp_path / "out"
    assert (await restore(catalog, plan.id, "latest", out)).status == "completed"
    restored = next(out.rglob("random.bin"))
    assert restored.read_bytes() == (src / "random.bin").read_bytes()


async def test_a_restorer_makes_its_default_restore_root(nats_server: NatsServer, log_dir: Path,
                                                         tmp_path: Path) -> None:
    """`<data dir>/restores` is a default restore root; the restorer makes it when it starts (a
    restore into it failed with a bare "[Errno 2]" while nobody had made the folder)."""
    data = tmp_path / "data"
    data.mkdir()
    services = Services(nats_server.url, log_dir)
    services.start("restorer", "--data-dir", str(data))
    try:
        deadline = time.monotonic() + 30
        while not (data / "restores").is_dir():
            assert time.monotonic() < deadline, "the restorer did not make restores/"
            await asyncio.sleep(0.1)
        assert (data / "restores").stat().st_mode & 0o777 == 0o700
    finally:
        services.stop_all()
