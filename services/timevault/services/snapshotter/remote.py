"""The archiver's two outside interfaces, over NATS: dedup by the catalog, blobs to uploaders.

`UploadSink` keeps every blob it sent until an uploader confirms it durable, and never holds more
than `max_in_flight` unconfirmed bytes (it asks for a flush first: backpressure). When its
uploader vanishes (killed, NATS restart), it opens a session with another one and resends the
unconfirmed blobs; the uploader side ignores repeats, so this is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec
from nats.aio.client import Client as NATS

from timevault.proto import subjects
from timevault.proto.chunks import ChunkLookup, ChunkLookupReply
from timevault.proto.errors import ServiceError
from timevault.proto.upload import (
    BlobFrame,
    BlobFrames,
    UploadAck,
    UploadClose,
    UploadFlush,
    UploadOpen,
    UploadOpened,
    frames_message,
)
from timevault.services.common import retry, rpc
from timevault.services.common.natsio import Buffer, Parts

if TYPE_CHECKING:
    from timevault.core.repository.blobs import EncodedBlob

log = logging.getLogger(__name__)
LOOKUP_BATCH = 500
PING_EVERY = 2.0
# Unconfirmed bytes: the uploader's open pack, the packs it is writing, and what is on the way.
# Blobs are confirmed only once their pack is durable (16 MiB fsync'd, ~66 ms here); with 32 MiB
# the window was full whenever a pack was being written, and a full backup took ~7 % longer.
MAX_IN_FLIGHT = 48 * 1024 * 1024
# Room for the frames head and NATS headers around a part's bytes.
_ENVELOPE = 16 * 1024
# Small blobs (most files are small) travel together: each request costs a round trip and
# event-loop work on both sides, so one per blob made the hop, not the bytes, the bottleneck.
# Up to a whole maximum-size chunk (4 MiB plus sealing), so large files' chunks travel in
# batches too, and a batch is filled until the next blob would not fit.
BATCH_BYTES = 4 * 1024 * 1024 + 64 * 1024
BATCH_BLOBS = 256
# Messages on the wire at once, awaiting their replies (each still bounded by `max_in_flight`).
MAX_REQUESTS = 3
# Head room per blob in a batch besides its payload (seq, id, lengths in MessagePack).
_BLOB_OVERHEAD = 96
_encoder = msgspec.msgpack.Encoder()


class CatalogKnownBlobs:
    """`KnownBlobs` answered by the catalog's chunk index, in batches."""

    def __init__(self, nc: NATS, plan_id: str) -> None:
        self.nc = nc
        self.plan_id = plan_id

    async def filter_unknown(self, ids: list[bytes]) -> set[bytes]:
        unknown: set[bytes] = set()
        for start in range(0, len(ids), LOOKUP_BATCH):
            batch = ids[start : start + LOOKUP_BATCH]
            reply = await rpc.request_retrying(
                self.nc, subjects.CHUNKS_LOOKUP, ChunkLookup(plan_id=self.plan_id, ids=[i.hex() for i in batch]),
                ChunkLookupReply, give_up_after=60)
            known = {bytes.fromhex(i) for i in reply.known}
            unknown.update(i for i in batch if i not in known)
        return unknown


class UploadSink:
    """`BlobSink` streaming to one uploader at a time, as ``frames`` messages.

    Small blobs travel together, up to a message's worth; a blob too big for one message goes
    in parts, one message each. Up to `max_requests` messages are on the wire at once (the
    uploader handles a session's frames in order), so neither side waits a round trip per
    message.
    """

    def __init__(self, nc: NATS, job_id: str, plan_id: str, *, max_in_flight: int = MAX_IN_FLIGHT,
                 request_timeout: float = 30.0, give_up_after: float = 90.0,
                 max_part: int | None = None, max_requests: int = MAX_REQUESTS,
                 batch_bytes: int = BATCH_BYTES, cancel: asyncio.Event | None = None) -> None:
        self.nc = nc
        # The job's cancel signal: a canceled job stops retrying at once, also in the middle of
        # waiting out an uploader outage (up to `give_up_after`; plan delete waits for it).
        self.cancel = cancel
        self.job_id = job_id
        self.plan_id = plan_id
        self.max_in_flight = max_in_flight
        self.request_timeout = request_timeout
        self.give_up_after = give_up_after
        self.max_part = max_part
        self.max_requests = max(1, max_requests)
        self.batch_bytes_limit = batch_bytes
        self.session: str | None = None
        self.sealed_key: bytes | None = None  # the job's sealed data key, from its first blob
        self.seq = 0
        # seq → blob, in send order (an OrderedDict: confirming pops from the front, O(1)).
        self.unconfirmed: OrderedDict[int, EncodedBlob] = OrderedDict()
        self.unconfirmed_bytes = 0
        self.peak_unconfirmed_bytes = 0
        self.reconnects = 0
        self.queued_seq = 0  # every blob up to this seq is in `batch` or was sent in this session
        self.batch: list[int] = []  # seqs queued but not sent yet (all in `unconfirmed`)
        self.batch_bytes = 0
        self.requests: deque[asyncio.Task[UploadAck]] = deque()  # sent messages awaiting replies
        self._lock = asyncio.Lock()
        # Seconds `add` waited: for a full window to free up, and for replies.
        self.waited_for_room = 0.0
        self.waited_for_replies = 0.0

    def _part_size(self) -> int:
        limit = max(self.nc.max_payload - _ENVELOPE, 64 * 1024)
        return min(self.max_part, limit) if self.max_part else limit

    async def add(self, blob: EncodedBlob) -> None:
        async with self._lock:
            if self.sealed_key is None:
                self.sealed_key = blob.sealed_key
            elif blob.sealed_key != self.sealed_key:
                raise ServiceError("internal", "one upload session carries the blobs of one data key")
            size = len(blob.payload)
            if self.unconfirmed and self.unconfirmed_bytes + size > self.max_in_flight:
                started = time.monotonic()
                await self._with_retry(self._make_room)
                self.waited_for_room += time.monotonic() - started
            self.seq += 1
            self.unconfirmed[self.seq] = blob
            self.unconfirmed_bytes += size
            if self.unconfirmed_bytes > self.peak_unconfirmed_bytes:
                self.peak_unconfirmed_bytes = self.unconfirmed_bytes
            await self._with_retry(self._queue_new)

    async def flush(self) -> None:
        async with self._lock:
            await self._with_retry(self._flush_once)
            if self.unconfirmed:
                raise ServiceError("internal", f"uploader did not confirm {len(self.unconfirmed)} blobs")

    async def close(self, *, discard: bool = False) -> None:
        if self.session is None:
            return
        if discard:
            self._abandon_requests()
        else:
            async with self._lock:
                await self._with_retry(self._send_all)
        if self.session is None:
            return
        try:
            await rpc.request(self.nc, subjects.upload_session(self.session, "close"), UploadClose(discard=discard),
                              UploadAck, msgpack=True, timeout=self.request_timeout)
        except ServiceError as exc:
            log.info("job %s: closing upload session: %s", self.job_id, exc)
        self.session = None

    # --- internals -----------------------------------------------------------------------
    # Each operation below runs under `_with_retry` and starts by opening a session when there
    # is none; `_open` queues every unconfirmed blob again, so no operation resends anything.

    def _batch_limit(self) -> int:
        # A batch must fit one message, like a part (an external NATS may allow only 1 MiB).
        return min(self.batch_bytes_limit, self._part_size())

    async def _open(self) -> None:
        self._abandon_requests()
        opened = await rpc.request(self.nc, subjects.UPLOAD_OPEN,
                                   UploadOpen(job_id=self.job_id, plan_id=self.plan_id,
                                              sealed_key=self.sealed_key or b""),
                                   UploadOpened, timeout=self.request_timeout)
        self.session = opened.session_id
        # A fresh uploader knows nothing: resend what the old one had not made durable.
        self.batch, self.batch_bytes, self.queued_seq = [], 0, 0
        for seq, blob in list(self.unconfirmed.items()):
            if seq in self.unconfirmed:  # replies that arrive meanwhile may confirm some
                await self._queue(seq, blob)
        await self._send_batch()

    async def _queue_new(self) -> None:
        """Queue the blob `add` just took (unless a new session's resend already did)."""
        if self.session is None:
            await self._open()
            return
        if self.seq > self.queued_seq and (blob := self.unconfirmed.get(self.seq)) is not None:
            await self._queue(self.seq, blob)

    async def _queue(self, seq: int, blob: EncodedBlob) -> None:
        """Add one blob to the batch, sending the batch when full; a large blob goes in parts."""
        self.queued_seq = seq
        size = len(blob.payload) + _BLOB_OVERHEAD
        limit = self._batch_limit()
        if size > limit:
            await self._send_batch()  # the parts follow the blobs queued before
            await self._send_parts(seq, blob)
            return
        if self.batch_bytes + size > limit:
            await self._send_batch()  # a batch must fit one message
        self.batch.append(seq)
        self.batch_bytes += size
        if self.batch_bytes >= limit - _BLOB_OVERHEAD or len(self.batch) >= BATCH_BLOBS:
            await self._send_batch()

    async def _send_batch(self) -> None:
        """Put the batch on the wire; waits for a reply only when `max_requests` are out."""
        if not self.batch:
            return
        if self.session is None:
            await self._open()  # resends every unconfirmed blob, the batch included
            return
        unconfirmed = self.unconfirmed
        sent = [(seq, blob) for seq in self.batch if (blob := unconfirmed.get(seq)) is not None]
        self.batch, self.batch_bytes = [], 0
        if sent:
            await self._post([_frame(seq, blob, len(blob.payload)) for seq, blob in sent],
                             [blob.payload for _, blob in sent])

    async def _send_parts(self, seq: int, blob: EncodedBlob) -> None:
        """A blob larger than a message: one message per part, in order (the uploader joins them)."""
        payload = memoryview(blob.payload)
        step = self._part_size()
        parts = -(-len(payload) // step)
        for index in range(parts):
            piece = payload[index * step : (index + 1) * step]
            await self._post([_frame(seq, blob, len(piece), index, parts)], [piece])

    async def _post(self, frames: list[BlobFrame], payloads: list[Buffer]) -> None:
        # The blobs' own (immutable) bytes go on the wire after the head, never joined.
        body = Parts(frames_message(BlobFrames(blobs=frames), payloads))
        self.requests.append(asyncio.create_task(self._call("frames", body)))
        started = time.monotonic()
        while len(self.requests) >= self.max_requests:
            await self._reap()
        self.waited_for_replies += time.monotonic() - started

    async def _reap(self) -> None:
        """Wait for the oldest outstanding message's reply; a failure abandons the rest too."""
        task = self.requests[0]
        try:
            ack = await asyncio.shield(task)
        except BaseException:
            self._abandon_requests()
            raise
        if self.requests and self.requests[0] is task:
            self.requests.popleft()
        self._confirm(ack)

    async def _drain(self) -> None:
        while self.requests:
            await self._reap()

    def _abandon_requests(self) -> None:
        # Their blobs stay in `unconfirmed` and are resent with the next session.
        while self.requests:
            task = self.requests.popleft()
            task.cancel()
            # Mark a failure as retrieved (no "exception was never retrieved" log); the caller
            # already handles the first one.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _send_all(self) -> None:
        if self.session is None:
            if not self.unconfirmed:
                return
            await self._open()
        await self._send_batch()
        await self._drain()

    async def _make_room(self) -> None:
        """The window is full: wait for durable progress (a pack being written), not a flush."""
        await self._send_all()
        if self.session is not None and self.unconfirmed_bytes >= self.max_in_flight // 2:
            self._confirm(await self._call("flush", _encoder.encode(UploadFlush(partial=True))))

    async def _flush_once(self) -> None:
        await self._send_all()
        if self.session is not None:
            self._confirm(await self._call("flush", _encoder.encode(UploadFlush())))

    async def _call(self, op: str, body: bytes | Parts) -> UploadAck:
        """A session request that fails fast when the uploader dies while handling it.

        A slow pack write may legitimately take long, so instead of a short timeout the sender
        pings the session meanwhile; a ping nobody answers means the uploader is gone, and a
        reconnect to NATS means the request may be lost: either way the caller resends.
        `body` is the request, already encoded.
        """
        assert self.session is not None
        session = self.session
        reconnects = self.nc.stats["reconnects"]
        call = asyncio.create_task(rpc.request_encoded(
            self.nc, subjects.upload_session(session, op), body, UploadAck,
            timeout=max(self.request_timeout, 300.0), msgpack=True))
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=PING_EVERY)
                if done:
                    return call.result()
                if self.nc.stats["reconnects"] != reconnects:
                    # The request or its reply may have been lost with the old connection.
                    raise ServiceError("unavailable", "NATS connection was re-established")
                await rpc.request(self.nc, subjects.upload_session(session, "ping"), UploadFlush(), UploadAck,
                                  msgpack=True, timeout=PING_EVERY)
        finally:
            if not call.done():
                call.cancel()
                with contextlib.suppress(BaseException):
                    await call

    def _confirm(self, ack: UploadAck) -> None:
        if ack.error:
            raise ServiceError("unavailable", f"uploader failed: {ack.error}")
        # `unconfirmed` is in seq order, so confirmed blobs are a prefix: stop at the first newer
        # one instead of scanning every unconfirmed blob on every ack (that was quadratic).
        unconfirmed = self.unconfirmed
        while unconfirmed:
            seq = next(iter(unconfirmed))
            if seq > ack.durable_seq:
                break
            _, blob = unconfirmed.popitem(last=False)
            self.unconfirmed_bytes -= len(blob.payload)

    async def _with_retry(self, op: Callable[[], Awaitable[None]]) -> None:
        """Run `op`; when the uploader is gone, start over with a new session (see `_open`)."""

        def lost(exc: ServiceError) -> None:
            # No uploader, or ours died (its session's subjects have no responders, or a request
            # went unanswered): a new session cures that. Any other error is an answer: say, the
            # plan is gone (``not_found``, as when it was deleted during the backup).
            if self.cancel is not None and self.cancel.is_set():
                raise exc  # a canceled job stops here (plan delete waits for it)
            log.warning("job %s: upload session lost (%s); reconnecting", self.job_id, exc)
            self._abandon_requests()
            self.session = None
            self.reconnects += 1

        try:
            try:
                await op()  # the usual case, without the machinery below
                return
            except ServiceError as exc:
                if not retry.is_retryable(exc):
                    raise
                lost(exc)
            await self._until_canceled(retry.while_unavailable(op, give_up_after=self.give_up_after,
                                                               on_retry=lost))
        except ServiceError:
            self._abandon_requests()
            raise

    async def _until_canceled(self, waiting: Awaitable[None]) -> None:
        """Await `waiting`, but raise BackupCanceled as soon as the job is canceled."""
        from timevault.core.errors import BackupCanceled

        task = asyncio.ensure_future(waiting)
        if self.cancel is None:
            await task
            return
        canceled = asyncio.ensure_future(self.cancel.wait())
        try:
            done, _ = await asyncio.wait({task, canceled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            canceled.cancel()
        if task in done:
            task.result()
            return
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        self._abandon_requests()
        raise BackupCanceled("backup canceled while the uploader was unavailable")


def _frame(seq: int, blob: EncodedBlob, size: int, part: int = 0, parts: int = 1) -> BlobFrame:
    return BlobFrame(seq=seq, id=blob.id, type=int(blob.type), raw_length=blob.raw_length, size=size,
                     part=part, parts=parts)
