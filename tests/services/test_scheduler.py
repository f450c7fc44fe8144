"""The scheduler against the real catalog with an injected clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from nats.aio.client import Client as NATS

from tests.services.helpers import create_plan, wait_job
from timevault.proto import subjects
from timevault.proto.errors import ServiceError
from timevault.proto.jobs import Job, JobClaim, JobCreate, JobList, JobListRequest, JobRef
from timevault.proto.plans import Plan, PlanDetail, PlanRef, PlanUpdate, PlanUpdateRequest, ScheduleUpdate
from timevault.services.common import rpc
from timevault.services.scheduler.service import Scheduler

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


async def _jobs(nc: NATS, plan_id: str) -> list[Job]:
    return (await rpc.request(nc, subjects.JOB_LIST, JobListRequest(plan=plan_id), JobList)).jobs


async def _finish_all(nc: NATS, plan_id: str) -> None:
    """End the plan's jobs (a session snapshotter may be running them) so it is not busy."""
    for job in await _jobs(nc, plan_id):
        if job.status in ("pending", "running"):
            await rpc.request(nc, subjects.JOB_CANCEL, JobRef(job_id=job.id), Job)
            await wait_job(nc, job.id, 30)


async def _plan_at(nc: NATS, tmp_path: Path, name: str, **schedule: object) -> tuple[Plan, datetime]:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    plan = await create_plan(nc, name, [src], tmp_path / f"repo-{name}", **schedule)
    assert plan.created_at is not None
    return plan, plan.created_at


async def test_daily_fires_once_per_slot_and_catches_up_once(catalog: NATS, tmp_path: Path) -> None:
    plan, created = await _plan_at(catalog, tmp_path, "sched-daily", time="03:00", timezone="Europe/Berlin")
    # Start the clock an hour before the first 03:00 Berlin after the plan was created (not
    # "tomorrow": created between 00:00 and 03:00 Berlin, today's slot comes first).
    local = created.astimezone(ZoneInfo("Europe/Berlin"))
    slot = local.replace(hour=3, minute=0, second=0, microsecond=0)
    if slot <= local:
        slot += timedelta(days=1)
    first = slot.astimezone(UTC)
    clock = FakeClock(first - timedelta(hours=1))
    scheduler = Scheduler(catalog, clock=clock)
    replies, upcoming = await scheduler.tick()
    assert not [r for r in replies if r.job and r.job.plan_id == plan.id]
    assert upcoming is not None

    clock.now = first + timedelta(seconds=1)
    replies, _ = await scheduler.tick()
    mine = [r for r in replies if r.job and r.job.plan_id == plan.id]
    assert len(mine) == 1 and mine[0].job and mine[0].job.trigger == "schedule"
    replies, _ = await scheduler.tick()  # same slot never again
    assert not [r for r in replies if r.job and r.job.plan_id == plan.id]
    await _finish_all(catalog, plan.id)

    # Down for five days: exactly one catch-up run on start.
    clock.advance(days=5, hours=3)
    restarted = Scheduler(catalog, clock=clock)
    replies, _ = await restarted.tick()
    assert len([r for r in replies if r.job and r.job.plan_id == plan.id]) == 1
    replies, _ = await restarted.tick()
    assert not [r for r in replies if r.job and r.job.plan_id == plan.id]
    assert len([j for j in await _jobs(catalog, plan.id) if j.trigger == "schedule"]) == 2
    await _finish_all(catalog, plan.id)


async def test_weekly_only_on_its_day(catalog: NATS, tmp_path: Path) -> None:
    plan, created = await _plan_at(catalog, tmp_path, "sched-weekly", frequency="weekly", weekday=5,
                                   time="12:00", timezone="America/New_York")
    clock = FakeClock(created)
    scheduler = Scheduler(catalog, clock=clock)
    fired_days = []
    for _ in range(14 * 4):  # two weeks in 6 h steps
        clock.advance(hours=6)
        replies, _ = await scheduler.tick()
        for reply in replies:
            if reply.job and reply.job.plan_id == plan.id:
                fired_days.append(clock.now)
                await _finish_all(catalog, plan.id)
    assert len(fired_days) == 2
    assert fired_days[1] - fired_days[0] == timedelta(days=7)


async def test_two_schedulers_fire_each_slot_exactly_once(catalog: NATS, tmp_path: Path) -> None:
    plan, created = await _plan_at(catalog, tmp_path, "sched-two", time="06:00")
    clock = FakeClock(created)
    a, b = Scheduler(catalog, clock=clock, instance="a"), Scheduler(catalog, clock=clock, instance="b")
    started = 0
    for _ in range(3):
        clock.advance(days=1)
        results = await asyncio.gather(a.tick(), b.tick(), a.tick(), b.tick())
        started += sum(1 for replies, _ in results for r in replies if r.job and r.job.plan_id == plan.id)
        await _finish_all(catalog, plan.id)
    assert started == 3


async def test_busy_plan_skips_the_slot_with_a_reason(catalog: NATS, tmp_path: Path) -> None:
    plan, created = await _plan_at(catalog, tmp_path, "sched-busy", time="06:00")
    # Hold a backup ourselves (a session snapshotter may otherwise run and finish it first).
    for _ in range(20):
        job = await rpc.request(catalog, subjects.JOB_CREATE, JobCreate(plan=plan.id), Job)
        try:
            await rpc.request(catalog, subjects.JOB_CLAIM, JobClaim(job_id=job.id, worker="holder"), Job)
            break
        except ServiceError:
            await wait_job(catalog, job.id, 30)
    clock = FakeClock(created + timedelta(days=1))
    replies, _ = await Scheduler(catalog, clock=clock).tick()
    mine = [r for r in replies if r.fired and r.job is None and "busy" in (r.reason or "")]
    assert len(mine) == 1
    await _finish_all(catalog, plan.id)


async def test_paused_plan_does_not_fire_and_missed_slots_stay_missed(catalog: NATS, tmp_path: Path) -> None:
    plan, created = await _plan_at(catalog, tmp_path, "sched-pause", time="06:00")
    await rpc.request(catalog, subjects.PLAN_PAUSE, PlanRef(plan=plan.id), Plan)
    clock = FakeClock(created + timedelta(days=3))
    scheduler = Scheduler(catalog, clock=clock)
    replies, _ = await scheduler.tick()
    assert not [r for r in replies if r.job and r.job.plan_id == plan.id]
    await rpc.request(catalog, subjects.PLAN_RESUME, PlanRef(plan=plan.id), Plan)
    # Slots after the resume (real time, before the fake "now") collapse into one run.
    replies, _ = await scheduler.tick()
    assert len([r for r in replies if r.job and r.job.plan_id == plan.id]) == 1
    await _finish_all(catalog, plan.id)


async def test_update_schedule_changes_next_run(catalog: NATS, tmp_path: Path) -> None:
    plan, _ = await _plan_at(catalog, tmp_path, "sched-update", time="06:00")
    updated = await rpc.request(catalog, subjects.PLAN_UPDATE, PlanUpdateRequest(
        plan=plan.id, update=PlanUpdate(schedule=ScheduleUpdate(time="07:30"))), Plan)
    assert updated.next_run is not None and updated.next_run.strftime("%H:%M") == "07:30"
    detail = await rpc.request(catalog, subjects.PLAN_GET, PlanRef(plan=plan.id), PlanDetail)
    assert detail.schedule.time == "07:30"


async def test_scheduler_process_runs_alone(nats_server: object, catalog: NATS, tmp_path: Path) -> None:
    from tests.services.conftest import ServiceProc

    proc = ServiceProc("scheduler", nats_server.url, tmp_path, "--poll", "1").start()  # type: ignore[attr-defined]
    try:
        for _ in range(300):
            if "ready" in proc.output():
                break
            assert proc.proc is not None and proc.proc.poll() is None, proc.output()
            await asyncio.sleep(0.05)
        assert "scheduler: ready" in proc.output()
    finally:
        assert proc.stop() == 0, proc.output()
