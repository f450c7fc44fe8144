"""Browsing sessions in the restorer: held in memory only, ended by idleness or by lock.

(Named to run after test_catalog.py, which expects no worker to be running yet: this one starts them.)
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from tests.services.conftest import ServiceProc
from tests.services.helpers import PASSWORD, create_plan
from tests.services.test_end_to_end import backup_now
from timevault.proto import subjects
from timevault.proto.browse import (
    BrowseList,
    BrowseListing,
    BrowseLocked,
    BrowseOpen,
    BrowseRef,
    BrowseSession,
)
from timevault.proto.errors import ServiceError
from timevault.services.common import rpc
from timevault.services.restorer.browsing import BrowseService

pytestmark = pytest.mark.timeout(120)


async def test_idle_sessions_lock_themselves(catalog: NATS, workers: dict[str, ServiceProc], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    plan = await create_plan(catalog, "browse-idle", [src], tmp_path / "repo")
    assert (await backup_now(catalog, plan.id)).status == "completed"
    # Our own restorer instance (the workers' one answers the queue too; ours is asked directly).
    service = BrowseService(catalog, "restorer-test-idle", sweep_every=0.1)
    await service.start()
    try:
        opened = await service.open(BrowseOpen(plan=plan.id, password=PASSWORD, idle_timeout=60))
        assert opened.session.startswith("restorer-test-idle.") and len(opened.session) > 40
        subject = subjects.browse_op("restorer-test-idle", "ls")
        listing = await rpc.request(catalog, subject, BrowseList(session=opened.session, snapshot="latest",
                                                                 path=str(src)), BrowseListing)
        assert [e.name for e in listing.entries] == ["a.txt"]
        session = service.sessions[opened.session]
        assert session.repo.can_read
        session.last_used = time.monotonic() - 61  # a minute of silence
        deadline = time.monotonic() + 5
        while opened.session in service.sessions:
            assert time.monotonic() < deadline, "the sweeper did not end the idle session"
            await asyncio.sleep(0.05)
        with pytest.raises(ServiceError) as err:
            await rpc.request(catalog, subject, BrowseList(session=opened.session, snapshot="latest"), BrowseListing)
        assert err.value.code == "unauthorized" and err.value.field == "session"
        # An explicit lock ends a session at once, and locking twice is harmless.
        second = await service.open(BrowseOpen(plan=plan.id, password=PASSWORD))
        lock = subjects.browse_op("restorer-test-idle", "lock")
        assert await rpc.request(catalog, lock, BrowseRef(session=second.session), BrowseLocked) == BrowseLocked()
        assert await rpc.request(catalog, lock, BrowseRef(session=second.session), BrowseLocked) == BrowseLocked()
        assert second.session not in service.sessions
        with pytest.raises(ServiceError):
            await rpc.request(catalog, subjects.browse_op("restorer-test-idle", "touch"),
                              BrowseRef(session=second.session), BrowseSession)
        with pytest.raises(ServiceError) as err:
            await service.open(BrowseOpen(plan=plan.id, password="wrong horse"))
        assert err.value.code == "unauthorized" and err.value.field == "password"
    finally:
        await service.stop()
    assert not service.sessions


async def test_the_restorer_service_answers_open(catalog: NATS, workers: dict[str, ServiceProc],
                                                 tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    plan = await create_plan(catalog, "browse-queue", [src], tmp_path / "repo")
    opened = await rpc.request(catalog, subjects.BROWSE_OPEN, BrowseOpen(plan=plan.name, password=PASSWORD),
                               BrowseSession, timeout=30)
    assert opened.plan_id == plan.id and opened.idle_timeout == 600
    instance = subjects.browse_instance(opened.session)
    touched = await rpc.request(catalog, subjects.browse_op(instance, "touch"), BrowseRef(session=opened.session),
                                BrowseSession)
    assert touched.expires_at >= opened.expires_at
