"""Objects of the accounts' repositories: streamed writes under a quota, range reads, soft deletes.

Each write becomes a new immutable *version*: its bytes go to the storage location in segments
of at most `SpaceConfig.segment_size` (``ACCOUNT/VV/VERSION-N``), read from the request body as
they arrive, and only then does one database transaction make it the live object (`SpaceDB`).
So a reader never sees part of an object, a write cut off half-way leaves only a pending version
for the janitor, and nothing is ever moved or rewritten in storage.

Memory is bounded: a write holds at most one segment of its body, and all writes together at
most `upload_buffer` bytes (`ByteBudget`); a read holds one `read_piece` at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import StreamReader

from timevault.core.storage import ObjectNotFound, Storage, StorageError, delete_many
from timevault.space.db import DBThread, ObjectRow, SpaceDB, is_lock, new_id
from timevault.space.errors import SpaceError, unauthorized
from timevault.space.sizes import format_size

log = logging.getLogger("timevault.space")

PURGE_BATCH = 200


class ByteBudget:
    """Bounds the request-body bytes held in memory by all writes at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._changed = asyncio.Condition()

    async def take(self, n: int) -> None:
        n = min(n, self.limit)
        async with self._changed:
            await self._changed.wait_for(lambda: self.held + n <= self.limit)
            self.held += n
            self.peak = max(self.peak, self.held)

    async def give(self, n: int) -> None:
        n = min(n, self.limit)
        async with self._changed:
            self.held -= n
            self._changed.notify_all()


@dataclass(frozen=True, slots=True)
class Stored:
    """What a write did: the object's size, and whether an identical live copy was kept instead."""

    size: int
    unchanged: bool = False


def segment_name(row: ObjectRow, index: int) -> str:
    return f"{row.account}/{row.version[:2]}/{row.version}-{index}"


def quota_error(used: int, quota: int | None, size: int) -> SpaceError:
    return SpaceError(
        413, "quota_exceeded",
        f"quota exceeded: this account uses {format_size(used)} of its {format_size(quota)} quota, "
        f"and {format_size(size)} more do not fit; free space in the Space's trash or ask for a larger quota",
    )


def _exists(name: str) -> SpaceError:
    return SpaceError(412, "exists", f"object {name} exists (If-None-Match: * never replaces one)", "name")


def _storage_failure(exc: StorageError) -> SpaceError:
    log.warning("storage: %s", exc)
    return SpaceError(503, "unavailable", "the Space's storage is unavailable; try again",
                      headers={"Retry-After": "2"})


class ObjectStore:
    def __init__(self, db: DBThread, storage: Storage, *, segment_size: int, upload_buffer: int,
                 read_piece: int) -> None:
        self.db = db
        self.storage = storage
        self.segment_size = segment_size
        self.read_piece = read_piece
        self.budget = ByteBudget(upload_buffer)
        self._purging: set[asyncio.Task[None]] = set()

    @property
    def _sdb(self) -> SpaceDB:
        return self.db.db

    # --- writes ----------------------------------------------------------------------------

    async def put(self, account: str, repo: str, name: str, size: int, body: StreamReader, *,
                  exclusive: bool = False) -> Stored:
        """Store a new version; with `exclusive`, only if no live object has the name (else 412)."""
        if exclusive and await self.db.run(self._sdb.live_object, account, repo, name) is not None:
            raise _exists(name)
        segments = max(1, -(-size // self.segment_size))
        row = ObjectRow(new_id(), account, repo, name, size, self.segment_size, segments, "pending",
                        time.time(), None)
        refused = await self.db.run(self._sdb.begin_put, row)
        if refused is not None:
            if refused.account_missing:
                raise unauthorized("this account no longer exists")
            raise quota_error(refused.used, refused.quota, size)
        try:
            await self._receive(row, body)
            identical = None if exclusive else await self._identical_live(row)
            purged, taken = await self.db.run(self._sdb.finish_put, row.version, identical, exclusive)
        except BaseException:
            # Cancelled too (the client went away): the pending version must not linger.
            await asyncio.shield(self._abort(row))
            raise
        self.purge_soon(purged)
        if taken:  # a racing writer created it first
            raise _exists(name)
        return Stored(size, unchanged=row.version in purged)

    async def _receive(self, row: ObjectRow, body: StreamReader) -> None:
        carry = memoryview(b"")
        for index in range(row.segments):
            want = min(self.segment_size, row.size - index * self.segment_size)
            await self.budget.take(want)
            try:
                parts: list[memoryview] = []
                got = 0
                while got < want:
                    if not carry:
                        chunk = await body.readany()
                        if not chunk:
                            raise SpaceError(400, "invalid", f"the body ended after {index * self.segment_size + got}"
                                             f" of {row.size} bytes")
                        carry = memoryview(chunk)
                    take = carry[: want - got]
                    carry = carry[take.nbytes:]
                    parts.append(take)
                    got += take.nbytes
                try:
                    await self.storage.put(segment_name(row, index), parts)
                except StorageError as exc:
                    raise _storage_failure(exc) from exc
                del parts
            finally:
                await self.budget.give(want)
        if carry or (not body.at_eof() and await body.readany()):
            raise SpaceError(400, "invalid", f"the body is longer than its Content-Length ({row.size})")

    async def _identical_live(self, row: ObjectRow) -> str | None:
        """The live version of the same name if it holds the same bytes (a repeated write).

        Compared only when the sizes match and the object is not a lock, which is rare (a retry
        after a lost answer), so ordinary writes pay nothing for it.
        """
        old = await self.db.run(self._sdb.live_object, row.account, row.repo, row.name)
        if old is None or old.size != row.size or is_lock(row.name):
            return None
        offset = 0
        while offset < row.size:
            length = min(self.read_piece, row.size - offset)
            try:
                if await self.read(old, offset, length) != await self.read(row, offset, length):
                    return None
            except (StorageError, ObjectNotFound):
                return None
            offset += length
        return old.version

    async def _abort(self, row: ObjectRow) -> None:
        try:
            await self.db.run(self._sdb.abort_put, row.version)
            await self._delete_segments(row)
            await self.db.run(self._sdb.forget, [row.version])
        except Exception as exc:  # the janitor finds it later
            log.warning("cannot clean up the failed write %s: %s", row.version, exc)

    # --- reads -----------------------------------------------------------------------------

    async def find(self, account: str, repo: str, name: str) -> ObjectRow:
        row = await self.db.run(self._sdb.live_object, account, repo, name)
        if row is None:
            raise SpaceError(404, "not_found", f"no object {name} in repository {repo}", "name")
        return row

    async def stream(self, row: ObjectRow, offset: int, length: int,
                     write: Callable[[bytes], Awaitable[None]]) -> None:
        """Send `length` bytes from `offset` through `write`, one piece at a time."""
        end = offset + length

        def next_read(at: int) -> asyncio.Future[bytes] | None:
            return asyncio.ensure_future(self.read(row, at, min(self.read_piece, end - at))) if at < end else None

        # The next piece is read from storage while this one goes out on the socket.
        reading = next_read(offset)
        try:
            while reading is not None:
                data = await reading
                expected = min(self.read_piece, end - offset)
                if len(data) != expected:
                    raise StorageError(f"segment of {row.version} is shorter than recorded")
                offset += expected
                reading = next_read(offset)
                await write(data)
        finally:
            if reading is not None and not reading.done():
                reading.cancel()
                with contextlib.suppress(BaseException):
                    await reading

    async def read(self, row: ObjectRow, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of a version; a range across segments is joined."""
        chunks: list[bytes] = []
        while length > 0:
            index, inner = divmod(offset, row.segment_size)
            n = min(length, row.segment_size - inner)
            chunks.append(await self.storage.get(segment_name(row, index), inner, n))
            offset += n
            length -= n
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # --- deletes and purging ---------------------------------------------------------------

    async def delete(self, account: str, repo: str, names: list[str]) -> None:
        purged = await self.db.run(self._sdb.delete_objects, account, repo, names)
        self.purge_soon(purged)

    def purge_soon(self, versions: list[str]) -> None:
        if versions:
            task = asyncio.create_task(self.purge_versions(versions))
            self._purging.add(task)
            task.add_done_callback(self._purging.discard)

    async def purge_versions(self, versions: list[str]) -> None:
        for version in versions:
            row = await self.db.run(self._sdb.object_version, version)
            if row is None or row.state != "purge":
                continue
            try:
                await self._delete_segments(row)
            except StorageError as exc:
                log.warning("cannot remove %s yet: %s", version, exc)  # the janitor retries
                continue
            await self.db.run(self._sdb.forget, [version])

    async def _delete_segments(self, row: ObjectRow) -> None:
        await delete_many(self.storage, [segment_name(row, i) for i in range(row.segments)])

    async def purge(self, *, trash_days: float, abandoned_before: float | None = None) -> int:
        """Move expired trash to the purge queue, then remove queued versions' bytes and rows."""
        await self.db.run(self._sdb.expire_trash, time.time() - trash_days * 86400)
        if abandoned_before is not None:
            await self.db.run(self._sdb.abandon_pending, abandoned_before)
        removed = 0
        while True:
            rows = await self.db.run(self._sdb.purge_queue, PURGE_BATCH)
            done = []
            for row in rows:
                try:
                    await self._delete_segments(row)
                except StorageError as exc:
                    log.warning("cannot remove %s yet: %s", row.version, exc)
                    continue
                done.append(row.version)
            await self.db.run(self._sdb.forget, done)
            removed += len(done)
            if len(rows) < PURGE_BATCH or not done:
                return removed

    async def close(self) -> None:
        for task in list(self._purging):
            with contextlib.suppress(Exception):
                await task
