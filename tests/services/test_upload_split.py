"""The chunk stream's edges: a chunk at the maximum size over a NATS with the default 1 MiB max
payload (split, never dropped), and an older snapshotter's `BlobBatch` requests.

Runs the real `UploadSink` and `UploaderService` in-process against their own nats-server
(default max_payload), with a stub catalog answering the two subjects the uploader needs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from timevault.proto import subjects
from timevault.proto.chunks import ChunkAdd, ChunkAddReply
from timevault.proto.plans import PlanRef, PlanSecrets
from timevault.proto.upload import BlobBatch, BlobPart, UploadAck, UploadFlush, UploadOpen, UploadOpened
from timevault.services.common import rpc
from timevault.services.common.natsd import NatsServer
from timevault.services.snapshotter.remote import UploadSink
from timevault.services.uploader.service import UploaderService

pytestmark = pytest.mark.timeout(60)
MiB = 1024 * 1024


@pytest.fixture
async def small_nats(tmp_path: Path) -> AsyncIterator[NATS]:
    server = NatsServer(tmp_path / "nats", max_payload=1 * MiB)
    server.start()
    nc = await nats.connect(server.url)
    yield nc
    await nc.close()
    server.stop()


async def test_max_size_chunk_is_split_and_stored(small_nats: NATS, tmp_path: Path) -> None:
    from timevault.core.chunker import ChunkerParams
    from timevault.core.crypto import SealingSession, blob_id
    from timevault.core.repository import Repository
    from timevault.core.repository.blobs import encode
    from timevault.core.repository.format import BlobType
    from timevault.core.storage import open_location

    nc = small_nats
    assert nc.max_payload == 1 * MiB
    location = tmp_path / "repo"
    repo = await Repository.init(open_location(str(location)), "pass word")
    keys = repo.export_write_keys()
    recorded: list[ChunkAdd] = []

    async def secrets(_req: PlanRef) -> PlanSecrets:
        return PlanSecrets(plan_id="p_x", location=str(location), write_keys=keys)

    async def chunks_add(req: ChunkAdd) -> ChunkAddReply:
        recorded.append(req)
        return ChunkAddReply(added=len(req.chunks))

    await rpc.serve(nc, subjects.PLAN_SECRETS, PlanRef, secrets)
    await rpc.serve(nc, subjects.CHUNKS_ADD, ChunkAdd, chunks_add)
    uploader = UploaderService(nc)
    await uploader.start()

    data = os.urandom(ChunkerParams().max_size)  # the largest chunk, incompressible
    blob = encode(SealingSession(repo.write_keys.public_key), blob_id(repo.write_keys.id_key, data),
                  BlobType.DATA, data)
    assert len(blob.payload) > 4 * MiB > nc.max_payload
    sink = UploadSink(nc, "j_x", "p_x")
    await sink.add(blob)
    await sink.flush()
    await sink.close()
    assert sink.unconfirmed == {}
    assert [c.id for add in recorded for c in add.chunks] == [blob.id.hex()]

    index = await repo.index(reload=True)
    assert blob.id in index
    assert await repo.load_blob(blob.id, BlobType.DATA) == data
    await uploader.stop()
    await repo.close()


async def test_blob_batches_of_older_senders_are_still_stored(small_nats: NATS, tmp_path: Path) -> None:
    """Snapshotters from before ``frames`` send `BlobBatch` on ``blobs``; uploaders still take it."""
    from timevault.core.crypto import SealingSession, blob_id
    from timevault.core.repository import Repository
    from timevault.core.repository.blobs import encode
    from timevault.core.repository.format import BlobType
    from timevault.core.storage import open_location

    nc = small_nats
    location = tmp_path / "repo"
    repo = await Repository.init(open_location(str(location)), "pass word")
    keys = repo.export_write_keys()

    async def secrets(_req: PlanRef) -> PlanSecrets:
        return PlanSecrets(plan_id="p_x", location=str(location), write_keys=keys)

    async def chunks_add(req: ChunkAdd) -> ChunkAddReply:
        return ChunkAddReply(added=len(req.chunks))

    await rpc.serve(nc, subjects.PLAN_SECRETS, PlanRef, secrets)
    await rpc.serve(nc, subjects.CHUNKS_ADD, ChunkAdd, chunks_add)
    uploader = UploaderService(nc)
    await uploader.start()

    sealing = SealingSession(repo.write_keys.public_key)
    datas = [os.urandom(1000 + i) for i in range(5)]
    blobs = [encode(sealing, blob_id(repo.write_keys.id_key, d), BlobType.DATA, d) for d in datas]
    opened = await rpc.request(nc, subjects.UPLOAD_OPEN, UploadOpen(job_id="j_x", plan_id="p_x"), UploadOpened)
    assert opened.batch and opened.frames
    batch = BlobBatch(blobs=[BlobPart(seq=i + 1, id=b.id, type=int(b.type), raw_length=b.raw_length, data=b.payload)
                             for i, b in enumerate(blobs)])
    await rpc.request(nc, subjects.upload_session(opened.session_id, "blobs"), batch, UploadAck, msgpack=True)
    ack = await rpc.request(nc, subjects.upload_session(opened.session_id, "flush"), UploadFlush(), UploadAck,
                            msgpack=True)
    assert ack.durable_seq == len(blobs)

    await repo.index(reload=True)
    for blob, data in zip(blobs, datas, strict=True):
        assert await repo.load_blob(blob.id, BlobType.DATA) == data
    await uploader.stop()
    await repo.close()
