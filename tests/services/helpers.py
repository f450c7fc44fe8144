"""Small helpers shared by the service tests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from timevault.proto import subjects
from timevault.proto.jobs import TERMINAL, Job, JobRef
from timevault.proto.plans import Location, Plan, PlanCreate, Schedule
from timevault.services.common import rpc

PASSWORD = "correct horse"


async def create_plan(nc: NATS, name: str, sources: list[Path], location: Path, **schedule: Any) -> Plan:
    sched = Schedule(**{"frequency": "daily", "time": "03:00", "timezone": "UTC", **schedule})
    req = PlanCreate(name=name, sources=[str(s) for s in sources], schedule=sched,
                     location=Location(type="local", path=str(location)), password=PASSWORD,
                     password_confirm=PASSWORD)
    return await rpc.request(nc, subjects.PLAN_CREATE, req, Plan, timeout=20)


async def wait_job(nc: NATS, job_id: str, seconds: float = 60, statuses: frozenset[str] = TERMINAL) -> Job:
    deadline = time.monotonic() + seconds
    while True:
        job = await rpc.request(nc, subjects.JOB_GET, JobRef(job_id=job_id), Job)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status} after {seconds}s: {job}")
        await asyncio.sleep(0.1)


async def discover(nc: NATS, verb: str, name: str = "", wait: float = 0.5) -> list[dict[str, Any]]:
    """Every reply to ``$SRV.<verb>[.<name>]`` (NATS service discovery) within `wait` seconds."""
    import json

    replies: list[dict[str, Any]] = []
    inbox = nc.new_inbox()

    async def collect(msg: Any) -> None:
        replies.append(json.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=collect)
    await nc.publish(f"$SRV.{verb}" + (f".{name}" if name else ""), b"", reply=inbox)
    await asyncio.sleep(wait)
    await sub.unsubscribe()
    return replies
