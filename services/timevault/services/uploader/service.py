"""Upload sessions: blobs in (possibly split into parts), packs out, acks only for durable blobs.

A blob counts as durable once its pack and the pack's index file are written *and* the catalog
has recorded its id (so the next backup dedups against it). Each ack carries ``durable_seq``:
every blob with a seq up to it is durable. Repeated blobs (redelivery, a resend after an
uploader died) are harmless: the Packer ignores ids it has seen and packs are content addressed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from timevault.proto import subjects
from timevault.proto.chunks import ChunkAdd, ChunkAddReply, ChunkRef
from timevault.proto.errors import ServiceError
from timevault.proto.plans import PlanRef, PlanSecrets
from timevault.proto.upload import (
    BlobBatch,
    BlobFrame,
    BlobPart,
    UploadAck,
    UploadClose,
    UploadFlush,
    UploadOpen,
    UploadOpened,
    read_frames,
)
from timevault.services.common import rpc
from timevault.services.common.util import instance_id, new_id

log = logging.getLogger(__name__)


class _BlobPartView(BlobPart, kw_only=True):
    """`BlobPart` decoded without copying its payload: ``data`` views the received message.

    The view keeps the message alive until the blob's pack is written; a batch's blobs all go
    into the same one or two packs, so that costs no more than the packs themselves.
    """

    data: memoryview  # type: ignore[assignment]


class _BlobBatchView(msgspec.Struct, kw_only=True):
    blobs: list[_BlobPartView]


class Session:
    def __init__(self, service: UploaderService, session_id: str, req: UploadOpen, secrets: PlanSecrets) -> None:
        from timevault.core.repository.format import BlobType, IndexPack
        from timevault.core.repository.keys import decode_write_keys
        from timevault.core.repository.pack import Packer
        from timevault.core.storage import open_location

        self.service = service
        self.id = session_id
        self.job_id = req.job_id
        self.plan_id = req.plan_id
        self.storage = open_location(secrets.location)
        keys = decode_write_keys(secrets.write_keys)

        async def written(entry: IndexPack) -> None:
            await self._record(entry)

        self.packer = Packer(self.storage, keys.meta_key, pack_size=service.pack_size, on_written=written)
        self.parts: dict[int, list[bytes | None]] = {}
        self.pending: dict[int, bytes] = {}  # seq → blob id, added but not yet durable
        # Pending seqs in arrival (= increasing) order; entries already durable are dropped
        # lazily, so `durable_seq` is O(1) amortized instead of min() over every pending blob.
        self.pending_order: deque[int] = deque()
        self.seqs_of: dict[bytes, set[int]] = {}
        self.blob_types = {int(t): t for t in BlobType}
        self.durable_ids: set[bytes] = set()
        self.last_seq = 0
        self.subs: list[Subscription] = []
        self.touched = time.monotonic()
        self.lock = asyncio.Lock()

    @property
    def durable_seq(self) -> int:
        order, pending = self.pending_order, self.pending
        while order and order[0] not in pending:
            order.popleft()
        return order[0] - 1 if order else self.last_seq

    async def _record(self, entry: object) -> None:
        chunks = [ChunkRef(id=b.id.hex(), pack=entry.id, length=b.length) for b in entry.blobs]  # type: ignore[attr-defined]
        request = ChunkAdd(plan_id=self.plan_id, chunks=chunks, pack_bytes=entry.size,  # type: ignore[attr-defined]
                           job_id=self.job_id)
        # Resending is safe for the index (known ids are ignored); after a lost reply the plan's
        # total size may count this pack twice, which only skews a statistic.
        await rpc.request_retrying(self.service.nc, subjects.CHUNKS_ADD, request, ChunkAddReply,
                                   give_up_after=10)
        for blob in entry.blobs:  # type: ignore[attr-defined]
            self.durable_ids.add(blob.id)
            for seq in self.seqs_of.pop(blob.id, ()):
                self.pending.pop(seq, None)

    async def blob(self, part: BlobPart) -> UploadAck:
        self.touched = time.monotonic()
        if part.parts < 1 or not 0 <= part.part < part.parts:
            raise ServiceError("invalid", "bad part numbers")
        if part.parts > 1:
            slots = self.parts.setdefault(part.seq, [None] * part.parts)
            if len(slots) != part.parts:
                raise ServiceError("invalid", "part count changed")
            slots[part.part] = bytes(part.data)  # a view would pin the whole message per part
            if any(s is None for s in slots):
                return UploadAck(durable_seq=self.durable_seq)
            data: bytes | memoryview = b"".join(self.parts.pop(part.seq))  # type: ignore[arg-type]
        else:
            data = part.data
        async with self.lock:
            await self._add(part, data)
        return UploadAck(durable_seq=self.durable_seq)

    async def blobs(self, batch: BlobBatch) -> UploadAck:
        """Several small blobs in one request: one NATS round trip instead of one per blob."""
        self.touched = time.monotonic()
        if any(part.parts != 1 for part in batch.blobs):
            raise ServiceError("invalid", "a batch carries whole blobs only")
        async with self.lock:
            for part in batch.blobs:
                await self._add(part, part.data)
        return UploadAck(durable_seq=self.durable_seq)

    async def frames(self, data: bytes | bytearray) -> UploadAck:
        """Several whole blobs in one `BlobFrames` message; packed as views of the message."""
        self.touched = time.monotonic()
        blobs = read_frames(data)
        async with self.lock:
            for blob, payload in blobs:
                await self._add(blob, payload)
        return UploadAck(durable_seq=self.durable_seq)

    async def _add(self, part: BlobPart | BlobFrame, data: bytes | memoryview) -> None:
        """Pack one whole blob (caller holds the lock); repeats are ignored."""
        from timevault.core.repository.blobs import EncodedBlob
        from timevault.core.repository.format import BlobType

        blob_type = self.blob_types.get(part.type) or BlobType(part.type)  # unknown type: ValueError
        seq = part.seq
        if seq <= self.last_seq and seq not in self.pending:
            return  # a repeat of something durable
        if seq > self.last_seq:
            self.last_seq = seq
        if part.id in self.durable_ids:
            return
        if seq not in self.pending:
            self.pending_order.append(seq)
        self.pending[seq] = part.id
        self.seqs_of.setdefault(part.id, set()).add(seq)
        await self.packer.add(EncodedBlob(part.id, blob_type, part.raw_length, data))  # type: ignore[arg-type]

    async def flush(self, req: UploadFlush) -> UploadAck:
        self.touched = time.monotonic()
        async with self.lock:
            if not (req.partial and await self._wait_for_a_pack()):
                await self.packer.flush()
        return UploadAck(durable_seq=self.durable_seq)

    async def _wait_for_a_pack(self) -> bool:
        """A sender whose window is full asks for this: sealing the open pack instead would
        write a small pack and wait for every write, each time the window fills."""
        try:
            return await self.packer.wait_for_one_write()
        except Exception as exc:
            raise ServiceError("unavailable", f"writing a pack failed: {exc}") from exc

    async def ping(self, _req: UploadFlush) -> UploadAck:
        self.touched = time.monotonic()
        return UploadAck(durable_seq=self.durable_seq)

    async def close(self, req: UploadClose) -> UploadAck:
        if req.discard:
            await self.packer.abort()
        else:
            await self.flush(UploadFlush())
        ack = UploadAck(durable_seq=self.durable_seq)
        await self.service.end(self)
        return ack


class UploaderService:
    def __init__(self, nc: NATS, *, pack_size: int | None = None, idle_timeout: float = 600.0,
                 instance: str | None = None) -> None:
        from timevault.core.repository.pack import PACK_SIZE

        self.nc = nc
        self.pack_size = pack_size or PACK_SIZE
        self.idle_timeout = idle_timeout
        self.instance = instance or instance_id("uploader")
        self.sessions: dict[str, Session] = {}
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await rpc.serve(self.nc, subjects.UPLOAD_OPEN, UploadOpen, self.open, queue=subjects.UPLOADER_QUEUE)
        self._reaper = asyncio.create_task(self._expire_idle())

    async def stop(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        for session in list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await session.packer.abort()
            await self.end(session)

    async def open(self, req: UploadOpen) -> UploadOpened:
        secrets = await rpc.request(self.nc, subjects.PLAN_SECRETS, PlanRef(plan=req.plan_id), PlanSecrets)
        session = Session(self, new_id("u"), req, secrets)
        # Blob payloads are decoded as views of the received message (no copy before packing).
        for op, kind, handler in (("blob", _BlobPartView, session.blob), ("blobs", _BlobBatchView, session.blobs),
                                  ("frames", bytes, session.frames), ("flush", UploadFlush, session.flush),
                                  ("close", UploadClose, session.close), ("ping", UploadFlush, session.ping)):
            # Blobs of one session are handled in order (no concurrent=True): ordering keeps
            # durable_seq meaningful and bounds this session's memory to one message.
            session.subs.append(await rpc.serve(self.nc, subjects.upload_session(session.id, op), kind,
                                                handler, msgpack=True, raw=op == "frames",
                                                concurrent=op not in ("blob", "blobs", "frames")))
        self.sessions[session.id] = session
        log.info("session %s opened for job %s", session.id, req.job_id)
        return UploadOpened(session_id=session.id, uploader=self.instance, batch=True, frames=True)

    async def end(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        for sub in session.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await session.storage.close()

    async def _expire_idle(self) -> None:
        # A snapshotter that died leaves its session behind; drop it (its blobs get resent).
        while True:
            await asyncio.sleep(min(30.0, self.idle_timeout))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if now - session.touched > self.idle_timeout:
                    log.info("session %s idle; dropping it", session.id)
                    with contextlib.suppress(Exception):
                        await session.packer.abort()
                    await self.end(session)
