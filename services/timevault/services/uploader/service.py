"""Upload sessions: ``frames`` in (whole blobs, or the parts of a large one), packs out, acks
only for durable blobs.

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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from timevault.proto import subjects
from timevault.proto.chunks import ChunkAdd, ChunkAddReply, ChunkRef, PackRef
from timevault.proto.errors import ServiceError
from timevault.proto.plans import PlanRef, PlanSecrets
from timevault.proto.upload import (
    BlobFrame,
    UploadAck,
    UploadClose,
    UploadFlush,
    UploadOpen,
    UploadOpened,
    read_frames,
)
from timevault.services.common import rpc
from timevault.services.common.holds import hold
from timevault.services.common.util import instance_id, new_id

if TYPE_CHECKING:
    from timevault.core.repository.format import IndexPack

log = logging.getLogger(__name__)
Req = TypeVar("Req")


class _Parts:
    """The parts of one blob received so far, as views of their messages."""

    __slots__ = ("frame", "views")

    def __init__(self, frame: BlobFrame) -> None:
        self.frame = frame
        self.views: dict[int, memoryview] = {}

    def add(self, frame: BlobFrame, view: memoryview) -> bytes | None:
        """Take one part; the whole blob (joined: its one copy) once every part is here."""
        first = self.frame
        if (frame.parts, frame.id, frame.type, frame.raw_length) != (first.parts, first.id, first.type,
                                                                     first.raw_length):
            raise ServiceError("invalid", f"part {frame.part} of blob {frame.seq} does not match its first part")
        self.views[frame.part] = view  # a repeat replaces the same part
        if len(self.views) < first.parts:
            return None
        return b"".join(self.views[i] for i in range(first.parts))


class Session:
    def __init__(self, service: UploaderService, session_id: str, req: UploadOpen, secrets: PlanSecrets) -> None:
        from timevault.core.crypto import SEALED_KEY_SIZE
        from timevault.core.repository.compact import IdSet
        from timevault.core.repository.format import BlobType
        from timevault.core.repository.keys import decode_write_keys
        from timevault.core.repository.pack import Packer
        from timevault.services.common.locations import open_service_location

        if len(req.sealed_key) != SEALED_KEY_SIZE:
            raise ServiceError("invalid", "an upload session needs the job's sealed data key", "sealed_key")
        self.service = service
        self.id = session_id
        self.job_id = req.job_id
        self.plan_id = req.plan_id
        # Every blob of the job is encrypted with this one key; packs carry it once in their header.
        self.sealed_key = req.sealed_key
        self.storage = open_service_location(secrets.location, secrets.credentials, secrets.space_token)
        keys = decode_write_keys(secrets.write_keys)

        async def written(entry: IndexPack) -> None:
            await self._record(entry)

        self.packer = Packer(self.storage, keys.meta_key, pack_size=service.pack_size, on_written=written)
        self.parts: dict[int, _Parts] = {}  # seq → a blob whose parts are arriving
        self.pending: dict[int, bytes] = {}  # seq → blob id, added but not yet durable
        # Pending seqs in arrival (= increasing) order; entries already durable are dropped
        # lazily, so `durable_seq` is O(1) amortized instead of min() over every pending blob.
        self.pending_order: deque[int] = deque()
        self.seqs_of: dict[bytes, set[int]] = {}
        self.blob_types = {int(t): t for t in BlobType}
        self.durable_ids = IdSet()  # compact: one per blob of the job
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

    async def _record(self, entry: IndexPack) -> None:
        await hold("upload.record")
        chunks = [ChunkRef(id=b.id.hex(), pack=entry.id, length=b.length) for b in entry.blobs]
        # `packs` (not `pack_bytes`): the catalog counts a pack once, so resending after a lost
        # reply neither adds ids twice nor the pack's size.
        request = ChunkAdd(plan_id=self.plan_id, chunks=chunks, job_id=self.job_id,
                           packs=[PackRef(id=entry.id, size=entry.size)])
        await rpc.request_retrying(self.service.nc, subjects.CHUNKS_ADD, request, ChunkAddReply,
                                   give_up_after=10)
        from timevault.core.repository.compact import ID_SIZE

        for blob in entry.blobs:
            if len(blob.id) == ID_SIZE:
                self.durable_ids.add(blob.id)
            for seq in self.seqs_of.pop(blob.id, ()):
                self.pending.pop(seq, None)

    async def frames(self, data: bytes | bytearray) -> UploadAck:
        """One `BlobFrames` message: whole blobs are packed as views of the message; the parts
        of a large blob are kept (as views) until the last one arrives, then joined."""
        self.touched = time.monotonic()
        frames = read_frames(data)
        async with self.lock:
            for frame, view in frames:
                payload: bytes | memoryview = view
                if frame.parts > 1:
                    parts = self.parts.get(frame.seq)
                    if parts is None:
                        parts = self.parts[frame.seq] = _Parts(frame)
                    whole = parts.add(frame, view)
                    if whole is None:
                        continue
                    del self.parts[frame.seq]
                    payload = whole
                await self._add(frame, payload)
        return UploadAck(durable_seq=self.durable_seq)

    async def _add(self, frame: BlobFrame, data: bytes | memoryview) -> None:
        """Pack one whole blob (caller holds the lock); repeats are ignored."""
        from timevault.core.repository.blobs import EncodedBlob
        from timevault.core.repository.format import BlobType

        blob_type = self.blob_types.get(frame.type) or BlobType(frame.type)  # unknown type: ValueError
        seq = frame.seq
        if seq <= self.last_seq and seq not in self.pending:
            return  # a repeat of something durable
        if seq > self.last_seq:
            self.last_seq = seq
        if frame.id in self.durable_ids:
            return
        if seq not in self.pending:
            self.pending_order.append(seq)
        self.pending[seq] = frame.id
        self.seqs_of.setdefault(frame.id, set()).add(seq)
        await self.packer.add(EncodedBlob(frame.id, blob_type, frame.raw_length, data, self.sealed_key))

    async def flush(self, req: UploadFlush) -> UploadAck:
        self.touched = time.monotonic()
        async with self.lock:
            if not (req.partial and await self._wait_for_a_pack()):
                await self.packer.flush()
        return UploadAck(durable_seq=self.durable_seq)

    async def _wait_for_a_pack(self) -> bool:
        """A sender whose window is full asks for this: sealing the open pack instead would
        write a small pack and wait for every write, each time the window fills."""
        from timevault.core.storage import StorageError

        try:
            return await self.packer.wait_for_one_write()
        except (StorageError, ServiceError):
            raise
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
        self._open_sub: Subscription | None = None

    async def start(self) -> None:
        self._open_sub = await rpc.serve(self.nc, subjects.UPLOAD_OPEN, UploadOpen, self.open,
                                         queue=subjects.UPLOADER_QUEUE)
        self._reaper = asyncio.create_task(self._expire_idle())

    async def stop(self) -> None:
        # No new sessions first: a stopped uploader must not take work it will never do.
        if self._open_sub is not None:
            with contextlib.suppress(Exception):
                await self._open_sub.unsubscribe()
            self._open_sub = None
        if self._reaper:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for session in list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await session.packer.abort()
            await self.end(session)

    async def open(self, req: UploadOpen) -> UploadOpened:
        secrets = await rpc.request(self.nc, subjects.PLAN_SECRETS, PlanRef(plan=req.plan_id), PlanSecrets)
        session = Session(self, new_id("u"), req, secrets)

        def name(op: str) -> str:  # one discovery endpoint per operation, not per session
            return f"upload.session.{op}"

        def pattern(op: str) -> str:
            return subjects.subject("upload.session.*", op)

        # Frames are handled in order (not concurrently): ordering keeps durable_seq meaningful,
        # lets a large blob's parts follow one another, and bounds this session's memory to one
        # message (plus the parts of one blob). `raw`: the body is taken apart as views, uncopied.
        session.subs.append(await rpc.serve(self.nc, subjects.upload_session(session.id, "frames"), bytes,
                                            _storage_errors(session, session.frames), msgpack=True, raw=True,
                                            concurrent=False, name=name("frames"), pattern=pattern("frames")))
        session.subs += [
            await rpc.serve(self.nc, subjects.upload_session(session.id, "flush"), UploadFlush,
                            _storage_errors(session, session.flush), msgpack=True, name=name("flush"),
                            pattern=pattern("flush")),
            await rpc.serve(self.nc, subjects.upload_session(session.id, "close"), UploadClose,
                            _storage_errors(session, session.close), msgpack=True, name=name("close"),
                            pattern=pattern("close")),
            await rpc.serve(self.nc, subjects.upload_session(session.id, "ping"), UploadFlush, session.ping,
                            msgpack=True, name=name("ping"), pattern=pattern("ping")),
        ]
        self.sessions[session.id] = session
        log.info("session %s opened for job %s", session.id, req.job_id)
        return UploadOpened(session_id=session.id, uploader=self.instance)

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


def _storage_errors(session: Session, handler: Callable[[Req], Awaitable[UploadAck]]
                    ) -> Callable[[Req], Awaitable[UploadAck]]:
    """A failed write to the location is one clear error reply (``storage``: full, read-only, gone),
    logged as one line; the sender fails the job at once instead of trying another uploader."""
    from timevault.core.storage import StorageError

    async def handle(request: Req) -> UploadAck:
        try:
            return await handler(request)
        except StorageError as exc:
            log.warning("session %s (job %s): %s", session.id, session.job_id, exc)
            raise ServiceError("storage", str(exc), "location") from exc

    return handle
