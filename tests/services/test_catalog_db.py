"""The catalog's database owns its transactions: writes only inside one, committed at the end,
rolled back on error, one writer at a time; and a write's messages go out only once committed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from tests.services.conftest import NatsServer
from timevault.proto import subjects, wire
from timevault.proto.plans import Location, PlanEvent, Schedule
from timevault.services.catalog.context import Catalog, CatalogOptions
from timevault.services.catalog.db import CatalogDB, PlanRow
from timevault.services.common.util import new_id, utcnow

pytestmark = pytest.mark.timeout(30)


def _row(name: str) -> PlanRow:
    now = utcnow()
    return PlanRow(id=new_id("p"), name=name, sources=["/src"],
                   schedule=Schedule(frequency="daily", time="03:00", timezone="UTC"),
                   location=Location(type="local", path=f"/repo/{name}"), write_keys=b"k", paused=False,
                   deleting=False, created_at=now, updated_at=now, resumed_at=None, last_slot=None, total_size=0)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[CatalogDB]:
    opened = await CatalogDB.open(tmp_path / "catalog.db")
    yield opened
    await opened.close()


async def test_writes_outside_a_transaction_are_refused(db: CatalogDB) -> None:
    with pytest.raises(RuntimeError, match="need a transaction"):
        await db.insert_plan(_row("loose"))
    assert await db.list_plans() == []


async def test_commit_at_the_end_and_rollback_on_error(db: CatalogDB, tmp_path: Path) -> None:
    async with db.transaction():
        await db.insert_plan(_row("kept"))
    with pytest.raises(ValueError, match="half way"):
        async with db.transaction():
            await db.insert_plan(_row("dropped"))
            await db.add_chunks("p_x", [(b"\x01" * 32, "pack", 10)])
            raise ValueError("half way")
    assert [p.name for p in await db.list_plans()] == ["kept"]
    assert await db.known_chunks("p_x", [b"\x01" * 32]) == set()
    # Committed means on disk: another connection sees it.
    other = await CatalogDB.open(tmp_path / "catalog.db")
    try:
        assert [p.name for p in await other.list_plans()] == ["kept"]
    finally:
        await other.close()


async def test_transactions_do_not_nest(db: CatalogDB) -> None:
    async with db.transaction():
        with pytest.raises(RuntimeError, match="do not nest"):
            async with db.transaction():
                pass


async def test_one_writer_at_a_time(db: CatalogDB) -> None:
    steps: list[str] = []

    async def write(name: str) -> None:
        async with db.transaction():
            steps.append(f"{name} begins")
            await asyncio.sleep(0.05)
            await db.insert_plan(_row(name))
            steps.append(f"{name} ends")

    await asyncio.gather(write("a"), write("b"))
    assert steps == ["a begins", "a ends", "b begins", "b ends"]


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[NATS]:
    nc = await nats.connect(nats_server.url)
    yield nc
    await nc.close()


async def test_a_write_is_announced_only_once_committed(db: CatalogDB, client: NATS) -> None:
    catalog = Catalog(client, db, CatalogOptions())
    row = _row("announced")
    heard: list[PlanEvent] = []

    async def on_event(msg: Msg) -> None:
        heard.append(wire.decode(msg.data, PlanEvent))

    await client.subscribe(subjects.plan_event(row.id), cb=on_event)
    await client.flush()
    with pytest.raises(ValueError):
        async with catalog.transaction() as tx:
            await db.insert_plan(row)
            await tx.event(row.id, "created", "never happened")
            raise ValueError("rolled back")
    async with catalog.transaction() as tx:
        await db.insert_plan(row)
        await tx.event(row.id, "created", "happened")
        await asyncio.sleep(0.2)
        assert heard == []  # not before the commit
    await client.flush()
    for _ in range(50):
        if heard:
            break
        await asyncio.sleep(0.02)
    assert [e.message for e in heard] == ["happened"]
    assert [e.message for e in await db.list_events(row.id, 10)] == ["happened"]
