"""The catalog over real NATS: plans, validation errors, jobs, busy plans, chunk index, reaper."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from tests.services.helpers import PASSWORD, create_plan, wait_job
from timevault.proto import subjects, wire
from timevault.proto.chunks import ChunkAdd, ChunkAddReply, ChunkLookup, ChunkLookupReply, ChunkRef
from timevault.proto.errors import ServiceError
from timevault.proto.jobs import Job, JobClaim, JobCreate, JobEvent, JobFinish, JobProgress, JobRef
from timevault.proto.plans import (
    Location,
    Plan,
    PlanCreate,
    PlanDeleted,
    PlanDetail,
    PlanEventList,
    PlanEventsRequest,
    PlanList,
    PlanListRequest,
    PlanRef,
    PlanSecrets,
    PlanUpdate,
    PlanUpdateRequest,
    Schedule,
    ScheduleUpdate,
    SnapshotInfo,
)
from timevault.services.common import rpc
from timevault.services.common.util import utcnow

pytestmark = pytest.mark.timeout(60)


async def test_plan_crud(catalog: NATS, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    plan = await create_plan(catalog, "crud plan", [src], tmp_path / "repo", frequency="weekly", weekday=3,
                             time="21:15", timezone="Europe/Berlin")
    assert plan.id.startswith("p_") and plan.schedule.weekday == 3 and plan.next_run is not None
    assert (tmp_path / "repo" / "config").exists()

    listed = await rpc.request(catalog, subjects.PLAN_LIST, PlanListRequest(), PlanList)
    assert plan.id in {p.id for p in listed.plans}

    by_name = await rpc.request(catalog, subjects.PLAN_GET, PlanRef(plan="crud plan"), PlanDetail)
    assert by_name.id == plan.id and by_name.snapshots == [] and by_name.total_size == 0

    updated = await rpc.request(catalog, subjects.PLAN_UPDATE, PlanUpdateRequest(
        plan=plan.id, update=PlanUpdate(schedule=ScheduleUpdate(frequency="daily", time="05:00"))), Plan)
    assert (updated.schedule.frequency, updated.schedule.time, updated.schedule.weekday) == ("daily", "05:00", None)
    assert updated.name == "crud plan"

    with pytest.raises(ServiceError) as info:
        await rpc.request(catalog, subjects.PLAN_UPDATE,
                          PlanUpdateRequest(plan=plan.id, update=PlanUpdate(name="renamed")), Plan)
    assert (info.value.code, info.value.field) == ("invalid", "name")

    paused = await rpc.request(catalog, subjects.PLAN_PAUSE, PlanRef(plan=plan.id), Plan)
    assert paused.paused and paused.next_run is None
    resumed = await rpc.request(catalog, subjects.PLAN_RESUME, PlanRef(plan=plan.id), Plan)
    assert not resumed.paused

    events = await rpc.request(catalog, subjects.PLAN_EVENTS, PlanEventsRequest(plan=plan.id), PlanEventList)
    assert [e.kind for e in events.events] == ["created", "updated", "paused", "resumed"]

    deleted = await rpc.request(catalog, subjects.PLAN_DELETE, PlanRef(plan=plan.id), PlanDeleted, timeout=30)
    assert deleted.deleted_objects >= 2
    assert not [p for p in (tmp_path / "repo").rglob("*")]
    with pytest.raises(ServiceError) as info:
        await rpc.request(catalog, subjects.PLAN_GET, PlanRef(plan=plan.id), PlanDetail)
    assert info.value.code == "not_found"


async def test_create_errors(catalog: NATS, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    await create_plan(catalog, "dup", [src], tmp_path / "r1")
    with pytest.raises(ServiceError) as info:
        await create_plan(catalog, "dup", [src], tmp_path / "r2")
    assert (info.value.code, info.value.field) == ("conflict", "name")
    assert not (tmp_path / "r2").exists()

    bad = PlanCreate(name="short pw", sources=[str(src)], schedule=Schedule(frequency="daily", time="01:00"),
                     location=Location(type="local", path=str(tmp_path / "r3")), password="abc",
                     password_confirm="abc")
    with pytest.raises(ServiceError) as info:
        await rpc.request(catalog, subjects.PLAN_CREATE, bad, Plan)
    assert (info.value.code, info.value.field) == ("invalid", "password")

    # A malformed message gets a clear error reply, not silence.
    msg = await catalog.request(subjects.PLAN_CREATE, b'{"name": 1}', timeout=5)
    assert msg.headers and msg.headers.get("Tv-Error") == "invalid"


async def test_secrets_are_written_private(catalog: NATS, tmp_path: Path, catalog_proc: object) -> None:
    src = tmp_path / "src"
    src.mkdir()
    plan = await create_plan(catalog, "secret plan", [src], tmp_path / "repo")
    secrets = await rpc.request(catalog, subjects.PLAN_SECRETS, PlanRef(plan=plan.id), PlanSecrets)
    assert secrets.write_keys and secrets.location == str(tmp_path / "repo")
    db = Path(catalog_proc.args[catalog_proc.args.index("--db") + 1])  # type: ignore[attr-defined]
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert PASSWORD.encode() not in db.read_bytes()
    assert PASSWORD not in catalog_proc.output()  # type: ignore[attr-defined]


async def test_job_lifecycle_busy_and_snapshot_commit(catalog: NATS, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    plan = await create_plan(catalog, "lifecycle", [src], tmp_path / "repo")
    events: list[JobEvent] = []

    async def on_event(msg: object) -> None:
        events.append(wire.decode(msg.data, JobEvent))  # type: ignore[attr-defined]

    sub = await catalog.subscribe(subjects.JOB_EVENTS_ALL, cb=on_event)
    job = await rpc.request(catalog, subjects.JOB_CREATE, JobCreate(plan=plan.id), Job)
    assert job.status == "pending"
    with pytest.raises(ServiceError) as info:
        await rpc.request(catalog, subjects.JOB_CREATE, JobCreate(plan=plan.name), Job)
    assert info.value.code == "busy" and "busy" in info.value.message

    running = await rpc.request(catalog, subjects.JOB_CLAIM, JobClaim(job_id=job.id, worker="w1"), Job)
    assert running.status == "running" and running.attempt == 1
    with pytest.raises(ServiceError) as info:
        await rpc.request(catalog, subjects.JOB_CLAIM, JobClaim(job_id=job.id, worker="w2"), Job)
    assert info.value.code == "busy"

    await catalog.publish(subjects.job_progress(job.id), wire.encode(JobProgress(
        job_id=job.id, worker="w1", ts=utcnow(), files_done=3, files_total=10, bytes_done=300,
        bytes_total=1000, rate=50.0)))
    await asyncio.sleep(0.3)
    seen = await rpc.request(catalog, subjects.JOB_GET, JobRef(job_id=job.id), Job)
    assert (seen.files_done, seen.bytes_total, seen.rate) == (3, 1000, 50.0)

    snap = SnapshotInfo(id="ab" * 32, started_at=utcnow(), finished_at=utcnow(), size=1000, added_size=600,
                        files=10)
    with pytest.raises(ServiceError):  # only the claiming worker may finish
        await rpc.request(catalog, subjects.JOB_FINISH, JobFinish(job_id=job.id, worker="w2",
                                                                  status="completed", snapshot=snap), Job)
    done = await rpc.request(catalog, subjects.JOB_FINISH, JobFinish(job_id=job.id, worker="w1",
                                                                     status="completed", snapshot=snap), Job)
    assert done.status == "completed" and done.snapshot_id == snap.id
    detail = await rpc.request(catalog, subjects.PLAN_GET, PlanRef(plan=plan.id), PlanDetail)
    assert [(s.id, s.status, s.files, s.added_size) for s in detail.snapshots] == [(snap.id, "completed", 10, 600)]
    await asyncio.sleep(0.2)
    await sub.unsubscribe()
    assert [e.job.status for e in events if e.job.id == job.id] == ["pending", "running", "completed"]

    # Not busy any more; cancel a pending job at once.
    job2 = await rpc.request(catalog, subjects.JOB_CREATE, JobCreate(plan=plan.id), Job)
    canceled = await rpc.request(catalog, subjects.JOB_CANCEL, JobRef(job_id=job2.id), Job)
    assert canceled.status == "canceled"
    with pytest.raises(ServiceError):
        await rpc.request(catalog, subjects.JOB_CLAIM, JobClaim(job_id=job2.id, worker="w1"), Job)
    detail = await rpc.request(catalog, subjects.PLAN_GET, PlanRef(plan=plan.id), PlanDetail)
    assert [s.status for s in detail.snapshots] == ["completed", "canceled"]


async def test_dead_worker_job_is_failed_with_reason(catalog: NATS, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    plan = await create_plan(catalog, "reaper", [src], tmp_path / "repo")
    job = await rpc.request(catalog, subjects.JOB_CREATE, JobCreate(plan=plan.id), Job)
    await rpc.request(catalog, subjects.JOB_CLAIM, JobClaim(job_id=job.id, worker="ghost"), Job)
    failed = await wait_job(catalog, job.id, seconds=20)  # catalog runs with --job-timeout 6
    assert failed.status == "failed" and "stopped responding" in (failed.error or "")


async def test_chunk_index_batch_lookup(catalog: NATS, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    plan = await create_plan(catalog, "chunks", [src], tmp_path / "repo")
    ids = [os.urandom(32).hex() for _ in range(1200)]
    added = await rpc.request(catalog, subjects.CHUNKS_ADD, ChunkAdd(
        plan_id=plan.id, chunks=[ChunkRef(id=i, pack="p1", length=10) for i in ids[:700]], pack_bytes=7000),
        ChunkAddReply)
    assert added.added == 700
    again = await rpc.request(catalog, subjects.CHUNKS_ADD, ChunkAdd(
        plan_id=plan.id, chunks=[ChunkRef(id=i, pack="p1", length=10) for i in ids[:10]]), ChunkAddReply)
    assert again.added == 0
    reply = await rpc.request(catalog, subjects.CHUNKS_LOOKUP, ChunkLookup(plan_id=plan.id, ids=ids),
                              ChunkLookupReply)
    assert set(reply.known) == set(ids[:700])
    detail = await rpc.request(catalog, subjects.PLAN_GET, PlanRef(plan=plan.id), PlanDetail)
    assert detail.total_size == 7000
