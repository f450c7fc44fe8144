"""The scheduler: asks the catalog for plans and fires each due slot once.

Stateless: the last fired slot lives in the catalog, which claims each slot with a
compare-and-set, so several scheduler copies (or a restarted one) never fire a slot twice.
After downtime only the latest missed slot fires (`latest_due`). The clock is injected so tests
can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from timevault.proto import subjects
from timevault.proto.errors import ServiceError
from timevault.proto.schedule import ScheduleFire, ScheduleFireReply, ScheduleList, ScheduleListRequest
from timevault.services.common import rpc
from timevault.services.common.slots import latest_due, next_run
from timevault.services.common.util import instance_id, utcnow

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, nc: NATS, *, clock: Callable[[], datetime] = utcnow, poll: float = 30.0,
                 instance: str | None = None) -> None:
        self.nc = nc
        self.clock = clock
        self.poll = poll
        self.instance = instance or instance_id("scheduler")
        self._wake = asyncio.Event()

    async def tick(self) -> tuple[list[ScheduleFireReply], datetime | None]:
        """Fire every due slot once; return the replies and the earliest upcoming slot."""
        listing = await rpc.request(self.nc, subjects.SCHEDULE_LIST, ScheduleListRequest(), ScheduleList)
        entries = listing.entries
        now = self.clock()
        replies: list[ScheduleFireReply] = []
        upcoming: datetime | None = None
        for entry in entries:
            if entry.paused:
                continue
            since = max(t for t in (entry.created_at, entry.last_slot, entry.resumed_at) if t is not None)
            slot = latest_due(entry.schedule, since, now)
            if slot is not None:
                try:
                    fire = ScheduleFire(plan_id=entry.plan_id, slot=slot, scheduler=self.instance)
                    reply = await rpc.request(self.nc, subjects.SCHEDULE_FIRE, fire, ScheduleFireReply)
                except ServiceError as exc:
                    log.warning("cannot fire plan %s at %s: %s", entry.plan_id, slot, exc)
                    continue
                replies.append(reply)
                if reply.job is not None:
                    log.info("plan %s: slot %s started job %s", entry.plan_id, slot, reply.job.id)
                elif reply.fired:
                    log.info("plan %s: slot %s skipped: %s", entry.plan_id, slot, reply.reason)
                since = max(since, slot)
            following = next_run(entry.schedule, max(since, now))
            upcoming = following if upcoming is None else min(upcoming, following)
        return replies, upcoming

    async def run(self, stop: asyncio.Event) -> None:
        async def on_plan_change(_msg: Msg) -> None:
            self._wake.set()

        sub = await self.nc.subscribe(subjects.PLAN_EVENTS_ALL, cb=on_plan_change)
        try:
            while not stop.is_set():
                self._wake.clear()
                wait = self.poll
                try:
                    _, upcoming = await self.tick()
                    if upcoming is not None:
                        wait = min(wait, max(0.05, (upcoming - self.clock()).total_seconds()))
                except ServiceError as exc:
                    log.warning("catalog unavailable: %s", exc)
                    wait = min(wait, 2.0)
                await _wait_any(stop, self._wake, wait)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def _wait_any(a: asyncio.Event, b: asyncio.Event, seconds: float) -> None:
    tasks = [asyncio.create_task(a.wait()), asyncio.create_task(b.wait())]
    try:
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
