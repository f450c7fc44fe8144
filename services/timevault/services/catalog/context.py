"""What every part of the catalog shares: the NATS connection, the database, the options, and
writes that publish their events only once committed.

A write is ``async with catalog.transaction() as tx:`` — the database transaction (one writer
at a time, committed at the end of the block, rolled back if it raises) plus the messages the
write announces (`tx.publish`, `tx.event`), sent after the commit, so nobody hears of a change
that a crash or an error could still undo.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from nats.aio.client import Client as NATS

from timevault.proto import subjects, wire
from timevault.proto.errors import ServiceError
from timevault.proto.jobs import Job
from timevault.proto.plans import PlanEvent, SnapshotInfo
from timevault.services.catalog.db import CatalogDB, PlanRow
from timevault.services.catalog.notify import NotifyConfig
from timevault.services.common.util import utcnow

log = logging.getLogger(__name__)
ACTIVE = ("pending", "running")
"""Job statuses that are not final."""


@dataclass
class CatalogOptions:
    job_timeout: float = 60.0
    """A running job without a heartbeat for this long is failed."""
    pending_timeout: float = 3600.0
    """A pending job nobody claims for this long is failed."""
    delete_wait: float = 60.0
    """How long plan delete waits for a running job to stop after cancel."""
    reap_every: float = 2.0
    test_weak_kdf: bool = False
    """Tests only: cheap key derivation for new repositories (the default is argon2id, 64 MiB)."""
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    """Notification delivery: URLs for every plan, attempts and backoff."""
    stream_replicas: int = 1
    """Copies of the JetStream streams (the NATS cluster's size in a deployment)."""


class Transaction:
    """One catalog write in progress: its database writes and the messages it will publish."""

    def __init__(self, db: CatalogDB) -> None:
        self.db = db
        self.messages: list[tuple[str, msgspec.Struct]] = []
        self.callbacks: list[Callable[[], Awaitable[None]]] = []

    def after(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` once the transaction is committed (and its messages published)."""
        self.callbacks.append(callback)

    def publish(self, subject: str, message: msgspec.Struct) -> None:
        """Publish `message` once the transaction is committed."""
        self.messages.append((subject, message))

    async def event(self, plan_id: str, kind: str, message: str = "", job_id: str | None = None) -> None:
        """Add to the plan's event log, and announce it on the plan's event subject."""
        event = PlanEvent(plan_id=plan_id, ts=utcnow(), kind=kind, message=message, job_id=job_id)
        await self.db.add_event(event)
        self.publish(subjects.plan_event(plan_id), event)


class Catalog:
    def __init__(self, nc: NATS, db: CatalogDB, options: CatalogOptions) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.db = db
        self.options = options
        self.job_ended: list[Callable[[Job, SnapshotInfo | None], Awaitable[None]]] = []
        """Called after the commit of every job's end (notifications)."""
        self.slot_missed: list[Callable[[PlanRow, datetime, int, str], Awaitable[None]]] = []
        """Called after the commit of a scheduled slot that did not run: (plan, slot, how many, why)."""

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        tx = Transaction(self.db)
        async with self.db.transaction():
            yield tx
        for subject, message in tx.messages:
            await self.publish(subject, message)
        for callback in tx.callbacks:
            try:
                await callback()
            except Exception:  # the write is committed; what follows it must not undo the reply
                log.exception("after-commit step failed")

    async def publish(self, subject: str, message: msgspec.Struct) -> None:
        with contextlib.suppress(Exception):  # events are best effort; state is in the DB
            await self.nc.publish(subject, wire.encode(message))

    async def plan(self, ref: str, *, allow_deleting: bool = False) -> PlanRow:
        """The plan by id or name; ``not_found`` when there is none (or it is being deleted)."""
        plan = await self.db.get_plan(ref)
        if plan is None or (plan.deleting and not allow_deleting):
            raise ServiceError("not_found", f"no plan {ref!r}", "plan")
        return plan

    async def job(self, job_id: str) -> tuple[Job, float, bool]:
        """The job, its last heartbeat and whether a cancel was requested; or ``not_found``."""
        found = await self.db.get_job(job_id)
        if found is None:
            raise ServiceError("not_found", f"no job {job_id!r}", "job_id")
        return found
