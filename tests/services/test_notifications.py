"""Notifications received by a local HTTP server: a failed backup (delivered after a retry), a
success when asked for, a missed and a skipped scheduled slot, a receiver that never accepts, and
the plan's record of the last delivery. The payload names the plan and the job and never a secret."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from nats.aio.client import Client as NATS

from tests.services.conftest import ServiceProc
from tests.services.helpers import PASSWORD, wait_job
from tests.services.test_end_to_end import backup_now
from timevault.proto import subjects
from timevault.proto.jobs import Job, JobCreate
from timevault.proto.plans import Location, Plan, PlanCreate, PlanDetail, PlanRef, Schedule
from timevault.proto.schedule import ScheduleFire, ScheduleFireReply
from timevault.services.common import rpc
from timevault.services.common.slots import next_run
from timevault.services.common.util import utcnow

pytestmark = pytest.mark.timeout(120)


@dataclass
class Receiver:
    """A local HTTP server that answers `fail_first` requests per path with 500, then 204."""

    url: str = ""
    fail_first: dict[str, int] = field(default_factory=dict)
    received: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.attempts[path] = self.attempts.get(path, 0) + 1
        body = await request.read()
        if self.attempts[path] <= self.fail_first.get(path, 0):
            return web.Response(status=500, text="not now")
        self.received.append((path, json.loads(body), dict(request.headers)))
        return web.Response(status=204)

    async def wait(self, path: str, count: int = 1, seconds: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while True:
            got = [body for p, body, _ in self.received if p == path]
            if len(got) >= count:
                return got
            assert time.monotonic() < deadline, f"{path}: {len(got)} of {count} notifications; {self.attempts}"
            await asyncio.sleep(0.05)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    recv.url = f"http://127.0.0.1:{port}"
    yield recv
    await runner.cleanup()


async def _plan(nc: NATS, name: str, sources: list[Path], location: Path, **options: Any) -> Plan:
    req = PlanCreate(name=name, sources=[str(s) for s in sources],
                     schedule=Schedule(frequency="daily", time="03:00", timezone="UTC"),
                     location=Location(type="local", path=str(location)), password=PASSWORD,
                     password_confirm=PASSWORD, **options)
    return await rpc.request(nc, subjects.PLAN_CREATE, req, Plan, timeout=20)


async def _last_delivery(nc: NATS, plan_id: str, seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        plan = await rpc.request(nc, subjects.PLAN_GET, PlanRef(plan=plan_id), PlanDetail)
        if plan.notify_last is not None:
            return plan.notify_last
        assert time.monotonic() < deadline, "no delivery recorded"
        await asyncio.sleep(0.1)


async def test_a_failed_backup_is_notified_after_a_retry(catalog: NATS, workers: dict[str, ServiceProc],
                                                         receiver: Receiver, tmp_path: Path) -> None:
    receiver.fail_first["/hook"] = 1  # the first POST gets a 500: the catalog must try again
    plan = await _plan(catalog, "notify-failure", [tmp_path / "does-not-exist"], tmp_path / "vault",
                       notify=[f"{receiver.url}/hook?secret-token=abc"])
    job = await backup_now(catalog, plan.id)
    assert job.status == "failed"
    [body] = await receiver.wait("/hook")
    assert receiver.attempts["/hook"] == 2
    assert body["plan"] == {"id": plan.id, "name": "notify-failure"}
    assert body["job"] == job.id and body["kind"] == "backup" and body["status"] == "failed"
    assert "does not exist" in body["error"]
    assert body["started_at"] and body["finished_at"] and body["sent_at"]
    assert set(body) == {"plan", "job", "kind", "status", "error", "files", "size", "added_size", "snapshot",
                         "started_at", "finished_at", "slot", "missed", "sent_at"}
    text = json.dumps(body)
    for secret in (PASSWORD, "secret-token", "write_keys", "password"):
        assert secret not in text
    headers = receiver.received[0][2]
    assert headers["Content-Type"] == "application/json"
    last = await _last_delivery(catalog, plan.id)
    assert last.ok and last.attempts == 2 and last.status == "failed" and last.job_id == job.id
    assert last.target == receiver.url and "secret-token" not in (last.target or "")


async def test_success_only_when_asked_and_a_receiver_that_never_accepts(
        catalog: NATS, workers: dict[str, ServiceProc], receiver: Receiver, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    quiet = await _plan(catalog, "notify-quiet", [src], tmp_path / "v1", notify=[f"{receiver.url}/quiet"])
    assert (await backup_now(catalog, quiet.id)).status == "completed"
    loud = await _plan(catalog, "notify-success", [src], tmp_path / "v2", notify=[f"{receiver.url}/loud"],
                       notify_success=True)
    job = await backup_now(catalog, loud.id)
    assert job.status == "completed"
    [body] = await receiver.wait("/loud")
    assert body["status"] == "completed" and body["error"] is None and body["files"] == 1 and body["size"] == 5
    assert body["snapshot"] == job.snapshot_id and body["added_size"] > 0
    assert "/quiet" not in receiver.attempts  # a success is news only to those who asked for it

    receiver.fail_first["/down"] = 99
    down = await _plan(catalog, "notify-down", [tmp_path / "missing"], tmp_path / "v3",
                       notify=[f"{receiver.url}/down"])
    assert (await backup_now(catalog, down.id)).status == "failed"
    last = await _last_delivery(catalog, down.id)
    assert not last.ok and last.attempts == 3 and last.http_status == 500 and "500" in (last.error or "")
    assert receiver.attempts["/down"] == 3


async def test_missed_and_skipped_slots(catalog: NATS, workers: dict[str, ServiceProc], receiver: Receiver,
                                        tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    plan = await _plan(catalog, "notify-slots", [src], tmp_path / "v", notify=[f"{receiver.url}/slots"])
    # The scheduler was down for three days: it fires only the latest slot; two were missed.
    first = next_run(plan.schedule, plan.created_at or utcnow())
    latest = next_run(plan.schedule, first + timedelta(days=2) - timedelta(minutes=1))
    reply = await rpc.request(catalog, subjects.SCHEDULE_FIRE, ScheduleFire(plan_id=plan.id, slot=latest),
                              ScheduleFireReply)
    assert reply.fired and reply.job is not None
    [missed] = await receiver.wait("/slots")
    assert missed["status"] == "missed" and missed["kind"] == "schedule" and missed["missed"] == 2
    assert missed["job"] is None and "did not run" in missed["error"]
    assert missed["slot"].startswith((latest - timedelta(days=1)).date().isoformat())
    await wait_job(catalog, reply.job.id)
    # A slot that comes while a backup still runs is skipped, and that is news too.
    snapshotter = workers["snapshotter"].proc
    assert snapshotter is not None
    snapshotter.send_signal(signal.SIGSTOP)
    try:
        manual = await rpc.request(catalog, subjects.JOB_CREATE, JobCreate(plan=plan.id), Job)
        following = next_run(plan.schedule, latest)
        reply = await rpc.request(catalog, subjects.SCHEDULE_FIRE, ScheduleFire(plan_id=plan.id, slot=following),
                                  ScheduleFireReply)
        assert reply.fired and reply.job is None and "busy" in (reply.reason or "")
        skipped = (await receiver.wait("/slots", 2))[1]
        assert skipped["status"] == "missed" and skipped["missed"] == 1 and "skipped" in skipped["error"]
    finally:
        snapshotter.send_signal(signal.SIGCONT)
    await wait_job(catalog, manual.id, 60)
