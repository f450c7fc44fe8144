"""Three bugs another helper found, each pinned down: a chunk-add repeated after a lost reply
counted its pack twice in the plan's total size; `UploaderService.stop()` left its
``tv.upload.open`` subscription behind; and during an uploader outage the upload sink's retries
(up to 90 s) did not notice that the job was canceled."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from tests.services.helpers import create_plan
from timevault.core.crypto import SealingSession, blob_id
from timevault.core.errors import BackupCanceled
from timevault.core.repository.blobs import encode
from timevault.core.repository.format import BlobType
from timevault.proto import subjects, wire
from timevault.proto.chunks import ChunkAdd, ChunkAddReply, ChunkRef, PackRef
from timevault.proto.errors import ServiceError
from timevault.proto.plans import PlanDetail, PlanRef
from timevault.proto.upload import UploadOpened
from timevault.services.common import natsio, rpc
from timevault.services.common.natsd import NatsServer
from timevault.services.snapshotter.remote import UploadSink
from timevault.services.uploader.service import UploaderService

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def private_nats(tmp_path: Path) -> AsyncIterator[NATS]:
    """A nats-server of this test alone: no uploader answers on it unless the test starts one."""
    natsio.tune_nats_client()
    server = NatsServer(tmp_path / "nats")
    server.start()
    nc = await nats.connect(server.url)
    yield nc
    await nc.close()
    server.stop()


async def test_a_repeated_chunk_add_counts_its_pack_once(catalog: NATS, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    plan = await create_plan(catalog, "counted-once", [src], tmp_path / "repo")
    pack = "ab" * 32
    request = ChunkAdd(plan_id=plan.id, chunks=[ChunkRef(id="cd" * 32, pack=pack, length=1000)],
                       packs=[PackRef(id=pack, size=4096)], job_id="j_x")
    first = await rpc.request(catalog, subjects.CHUNKS_ADD, request, ChunkAddReply)
    again = await rpc.request(catalog, subjects.CHUNKS_ADD, request, ChunkAddReply)  # the reply was lost
    assert (first.added, again.added) == (1, 0)
    detail = await rpc.request(catalog, subjects.PLAN_GET, PlanRef(plan=plan.id), PlanDetail)
    assert detail.total_size == 4096


async def test_a_stopped_uploader_takes_no_new_sessions(private_nats: NATS) -> None:
    uploader = UploaderService(private_nats)
    before = len(private_nats._subs)
    await uploader.start()
    assert len(private_nats._subs) == before + 1  # tv.upload.open
    await uploader.stop()
    assert len(private_nats._subs) == before
    with pytest.raises(ServiceError) as info:  # nobody answers any more, not a stopped service
        await rpc.request(private_nats, subjects.UPLOAD_OPEN, {"job_id": "j", "plan_id": "p"}, dict, timeout=2)
    assert info.value.code == "unavailable"


async def test_a_cancel_stops_the_sink_waiting_out_an_uploader_outage(private_nats: NATS) -> None:
    """The uploader opens a session and vanishes; the next one to answer never replies (a NATS
    outage looks like that): each attempt waits out its request timeout, yet a cancel ends it now."""
    opened = 0

    async def on_open(msg: Msg) -> None:
        nonlocal opened
        opened += 1
        if opened == 1:  # the first session: its own subjects have no responders
            await msg.respond(wire.encode(UploadOpened(session_id="u_gone", uploader="gone")))
        # later ones: no reply at all

    await private_nats.subscribe(subjects.UPLOAD_OPEN, cb=on_open)
    cancel = asyncio.Event()
    sink = UploadSink(private_nats, "j_cancel", "p_cancel", request_timeout=30, give_up_after=90, cancel=cancel)
    session = SealingSession(os.urandom(32))
    data = os.urandom(10_000)
    blob = encode(session, blob_id(os.urandom(32), data), BlobType.DATA, data)
    await sink.add(blob)  # queued in the first session
    asyncio.get_running_loop().call_later(1.0, cancel.set)
    started = time.monotonic()
    with pytest.raises(BackupCanceled):
        await sink.flush()  # the session is gone; reopening hangs for 30 s per attempt
    assert opened >= 2 and time.monotonic() - started < 5, "the cancel must end the wait at once"
