"""The chunk stream's edges over a NATS with the default 1 MiB max payload: a blob larger than a
message travels as parts of ``frames`` messages (split, never dropped), in order with the
small blobs around it; the uploader joins parts and refuses parts that do not belong together.

Runs the real `UploadSink` and `UploaderService` in-process against their own nats-server
(default max_payload), with a stub catalog answering the two subjects the uploader needs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from timevault.core.crypto import SealingSession
from timevault.core.repository import Repository
from timevault.core.repository.blobs import EncodedBlob
from timevault.proto import subjects
from timevault.proto.chunks import ChunkAdd, ChunkAddReply
from timevault.proto.errors import ServiceError
from timevault.proto.plans import PlanRef, PlanSecrets
from timevault.proto.upload import (
    BlobFrame,
    BlobFrames,
    UploadAck,
    UploadFlush,
    UploadOpen,
    UploadOpened,
    frames_message,
    read_frames,
)
from timevault.services.common import natsio, rpc
from timevault.services.common.natsd import NatsServer
from timevault.services.common.natsio import Parts
from timevault.services.snapshotter.remote import UploadSink
from timevault.services.uploader.service import UploaderService

pytestmark = pytest.mark.timeout(60)
MiB = 1024 * 1024


@pytest.fixture
async def small_nats(tmp_path: Path) -> AsyncIterator[NATS]:
    natsio.tune_nats_client()  # as every service does: `UploadSink` sends `Parts` bodies
    server = NatsServer(tmp_path / "nats", max_payload=1 * MiB)
    server.start()
    nc = await nats.connect(server.url)
    yield nc
    await nc.close()
    server.stop()


@dataclass
class Uploading:
    """An uploader in-process, its repository, and what it recorded in the (stub) catalog."""

    nc: NATS
    repo: Repository
    uploader: UploaderService
    recorded: list[ChunkAdd]
    sealing: SealingSession | None = None

    @property
    def session(self) -> SealingSession:
        """One backup job's data key: every blob of an upload session is encrypted with it."""
        if self.sealing is None:
            self.sealing = SealingSession(self.repo.write_keys.public_key)
        return self.sealing

    def blob(self, data: bytes) -> EncodedBlob:
        from timevault.core.crypto import blob_id
        from timevault.core.repository.blobs import encode
        from timevault.core.repository.format import BlobType

        return encode(self.session, blob_id(self.repo.write_keys.id_key, data), BlobType.DATA, data)

    async def load(self, blob: EncodedBlob) -> bytes:
        from timevault.core.repository.format import BlobType

        return bytes(await self.repo.load_blob(blob.id, BlobType.DATA))


@pytest.fixture
async def uploading(small_nats: NATS, tmp_path: Path) -> AsyncIterator[Uploading]:
    from timevault.core.storage import open_location

    location = tmp_path / "repo"
    repo = await Repository.init(open_location(str(location)), "pass word")
    keys = repo.export_write_keys()
    recorded: list[ChunkAdd] = []

    async def secrets(_req: PlanRef) -> PlanSecrets:
        return PlanSecrets(plan_id="p_x", location=str(location), write_keys=keys)

    async def chunks_add(req: ChunkAdd) -> ChunkAddReply:
        recorded.append(req)
        return ChunkAddReply(added=len(req.chunks))

    await rpc.serve(small_nats, subjects.PLAN_SECRETS, PlanRef, secrets)
    await rpc.serve(small_nats, subjects.CHUNKS_ADD, ChunkAdd, chunks_add)
    uploader = UploaderService(small_nats)
    await uploader.start()
    yield Uploading(small_nats, repo, uploader, recorded)
    await uploader.stop()
    await repo.close()


async def test_max_size_chunk_is_split_and_stored(uploading: Uploading) -> None:
    from timevault.core.chunker import ChunkerParams

    nc = uploading.nc
    assert nc.max_payload == 1 * MiB
    data = os.urandom(ChunkerParams().max_size)  # the largest chunk, incompressible
    blob = uploading.blob(data)
    assert len(blob.payload) > 4 * MiB > nc.max_payload
    sink = UploadSink(nc, "j_x", "p_x")
    await sink.add(blob)
    await sink.flush()
    await sink.close()
    assert sink.unconfirmed == {}
    assert [c.id for add in uploading.recorded for c in add.chunks] == [blob.id.hex()]

    index = await uploading.repo.index(reload=True)
    assert blob.id in index
    assert await uploading.load(blob) == data


async def test_frames_carry_parts_between_small_blobs_in_order(uploading: Uploading) -> None:
    """Small blobs, a blob of several messages, more small ones, another large one: every
    message fits the server's limit, parts go in order, all blobs are stored."""
    nc = uploading.nc
    sizes = [20_000] * 30 + [3 * MiB + 5] + [1000] * 5 + [int(2.5 * MiB)] + [70_000] * 20
    datas = [os.urandom(n) for n in sizes]
    blobs = [uploading.blob(d) for d in datas]
    spy = await nats.connect(nc.connected_url.geturl() if nc.connected_url else "")
    seen: list[list[BlobFrame]] = []

    async def on_frames(msg: Msg) -> None:
        assert len(msg.data) <= nc.max_payload
        seen.append([frame for frame, _ in read_frames(msg.data)])

    await spy.subscribe("tv.upload.session.*.frames", cb=on_frames)
    await spy.flush()
    sink = UploadSink(nc, "j_x", "p_x")
    for blob in blobs:
        await sink.add(blob)
    await sink.flush()
    await sink.close()
    await spy.flush()
    await spy.close()
    assert sink.unconfirmed == {} and sink.reconnects == 0

    frames = [frame for message in seen for frame in message]
    # Every blob once, in seq order; the two large ones as parts, each part a message of its own.
    assert [f.seq for f in frames if f.part == 0] == list(range(1, len(blobs) + 1))
    parted = [f for f in frames if f.parts > 1]
    assert {f.seq for f in parted} == {31, 37}
    assert [(f.seq, f.part) for f in parted] == [(31, i) for i in range(4)] + [(37, i) for i in range(3)]
    assert all(len(message) == 1 for message in seen if message[0].parts > 1)
    assert any(len(message) > 1 for message in seen)  # small blobs still travel together

    assert sorted(c.id for add in uploading.recorded for c in add.chunks) == sorted(b.id.hex() for b in blobs)
    await uploading.repo.index(reload=True)
    for blob, data in zip(blobs, datas, strict=True):
        assert await uploading.load(blob) == data


async def test_an_uploader_lost_in_the_middle_of_a_blobs_parts(uploading: Uploading) -> None:
    """The uploader's sessions end while a large blob's parts are arriving: the sink opens a new
    session (with whichever uploader answers) and sends everything unconfirmed again, that blob
    from its first part; the parts the old session had are not needed."""
    nc = uploading.nc
    datas = [os.urandom(30_000) for _ in range(20)] + [os.urandom(3 * MiB)] + [os.urandom(30_000) for _ in range(20)]
    blobs = [uploading.blob(d) for d in datas]
    second = UploaderService(nc)
    spy = await nats.connect(nc.connected_url.geturl() if nc.connected_url else "")
    sessions: list[str] = []
    switched: list[asyncio.Task[None]] = []

    async def switch() -> None:
        await uploading.uploader.stop()
        await second.start()

    async def on_frames(msg: Msg) -> None:
        session = msg.subject.split(".")[3]
        if session not in sessions:
            sessions.append(session)
        if not switched and any(frame.part == 1 for frame, _ in read_frames(msg.data)):
            switched.append(asyncio.create_task(switch()))

    await spy.subscribe("tv.upload.session.*.frames", cb=on_frames)
    await spy.flush()
    sink = UploadSink(nc, "j_x", "p_x")
    for blob in blobs:
        await sink.add(blob)
    await sink.flush()
    await sink.close()
    await spy.close()
    await second.stop()
    assert switched and sink.reconnects >= 1 and len(sessions) == 2
    assert sink.unconfirmed == {}
    await uploading.repo.index(reload=True)
    for blob, data in zip(blobs, datas, strict=True):
        assert await uploading.load(blob) == data


def _frames(frames: list[tuple[BlobFrame, bytes | memoryview]]) -> Parts:
    return Parts(frames_message(BlobFrames(blobs=[f for f, _ in frames]), [p for _, p in frames]))


async def test_uploader_joins_parts_and_refuses_parts_that_do_not_match(uploading: Uploading) -> None:
    nc = uploading.nc
    data = os.urandom(300_000)
    blob = uploading.blob(data)
    payload = memoryview(blob.payload)
    third = -(-len(payload) // 3)
    pieces = [payload[i * third : (i + 1) * third] for i in range(3)]

    def part(index: int, seq: int = 1, **changes: int) -> tuple[BlobFrame, memoryview]:
        fields = {"seq": seq, "type": int(blob.type), "raw_length": blob.raw_length, "size": len(pieces[index]),
                  "part": index, "parts": 3, **changes}
        return BlobFrame(id=blob.id, **fields), pieces[index]

    opened = await rpc.request(nc, subjects.UPLOAD_OPEN,
                               UploadOpen(job_id="j_x", plan_id="p_x", sealed_key=uploading.session.sealed),
                               UploadOpened)

    async def send(body: Parts) -> UploadAck:
        return await rpc.request_encoded(nc, subjects.upload_session(opened.session_id, "frames"), body,
                                         UploadAck, msgpack=True)

    # Parts in any order, one repeated: the blob is packed once, when its last part is in.
    await send(_frames([part(2)]))
    await send(_frames([part(0), part(2)]))
    await send(_frames([part(1)]))
    ack = await rpc.request(nc, subjects.upload_session(opened.session_id, "flush"), UploadFlush(), UploadAck,
                            msgpack=True)
    assert ack.durable_seq == 1
    await uploading.repo.index(reload=True)
    assert await uploading.load(blob) == data

    await send(_frames([part(0, seq=2)]))
    with pytest.raises(ServiceError, match="does not match its first part") as mismatch:
        await send(_frames([part(1, seq=2, raw_length=blob.raw_length + 1)]))
    assert mismatch.value.code == "invalid"
    with pytest.raises(ServiceError, match="bad part numbers") as bad:
        await send(_frames([part(1, seq=3, parts=1)]))
    assert bad.value.code == "invalid"
