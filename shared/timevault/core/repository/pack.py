"""Packs: many encrypted blobs in one ~16 MiB object, plus an encrypted header.

Layout: blob payloads back to back, then the header, then the header's length as 4 bytes
little-endian, then the magic ``TVP2``. The header is AES-GCM with the metadata key of
``u32 length ‖ msgpack PackHeader ‖ zero padding`` (padded like blobs): the sealed data keys of
the pack's blobs (once each) and where each blob lies. Blobs carry no clear bytes of their own,
so storage sees one run of ciphertext with no visible boundaries. A pack's id is the BLAKE3
hash of its bytes, so `check --read-data` can verify it whole.

The `Packer` writes each pack and then an index file for it, in that order: a crash can leave
a pack with no index (unused, removed by prune), never an index entry without its pack.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable

import msgspec

from timevault.core import crypto
from timevault.core.errors import CorruptPack
from timevault.core.repository.blobs import EncodedBlob
from timevault.core.repository.compact import ID_SIZE, IdMap, IdSet
from timevault.core.repository.format import PACK_MAGIC, BlobType, IndexPack, PackBlob, PackHeader
from timevault.core.repository.index import pack_object_name, write_index_file
from timevault.core.storage import Storage
from timevault.core.storage.base import BytesLike
from timevault.core.storage.once import put_once

PACK_SIZE = 16 * 1024 * 1024
# Trees go to packs of their own, sealed smaller: an open pack is held in memory until it is
# written, and an incremental backup rewrites the tree of every folder with a change, so at a
# million small files its trees (tens of MB) kept a full 16 MiB tree pack open beside the data
# pack. A tree pack is also what browsing and restores read first, in windows.
TREE_PACK_SIZE = 4 * 1024 * 1024
_TRAILER = struct.Struct("<I4s")
_LENGTH = struct.Struct("<I")
_header_decoder = msgspec.msgpack.Decoder(PackHeader)


def encode_header(meta_key: bytes, header: PackHeader) -> bytes:
    body = msgspec.msgpack.encode(header)
    padded = bytearray(crypto.padme(crypto.AEAD_OVERHEAD + _LENGTH.size + len(body)))
    crypto.encrypt_padded_into(meta_key, b"pack", _LENGTH.pack(len(body)), body, memoryview(padded))
    return bytes(padded)


def decode_header(meta_key: bytes, data: BytesLike) -> PackHeader:
    try:
        plaintext = crypto.decrypt(meta_key, data, b"pack")
        if len(plaintext) < _LENGTH.size:
            raise CorruptPack("pack header is damaged")
        (length,) = _LENGTH.unpack_from(plaintext)
        if length > len(plaintext) - _LENGTH.size:
            raise CorruptPack("pack header is damaged")
        header = _header_decoder.decode(memoryview(plaintext)[_LENGTH.size : _LENGTH.size + length])
    except (crypto.Unauthenticated, msgspec.DecodeError) as exc:
        raise CorruptPack("pack header is damaged") from exc
    if any(not 0 <= blob.key < len(header.keys) for blob in header.blobs):
        raise CorruptPack("pack header names a data key it does not hold")
    return header


def pack_parts(meta_key: bytes, blobs: list[EncodedBlob]) -> tuple[str, list[BytesLike], IndexPack]:
    """Assemble one pack as parts in storage order (payloads, header, trailer), not joined.

    Returns (pack id, parts, its index entry). Storage writes the parts with one gathered
    write; joining them first would copy 16 MiB into fresh pages while holding the GIL.
    """
    entries: list[PackBlob] = []
    key_numbers: dict[bytes, int] = {}
    offset = 0
    for blob in blobs:
        key = key_numbers.setdefault(blob.sealed_key, len(key_numbers))
        entries.append(PackBlob(blob.id, blob.type, offset, len(blob.payload), blob.raw_length, key))
        offset += len(blob.payload)
    keys = list(key_numbers)
    header = encode_header(meta_key, PackHeader(keys, entries))
    parts: list[BytesLike] = [*(blob.payload for blob in blobs), header, _TRAILER.pack(len(header), PACK_MAGIC)]
    pack_id = crypto.content_hash_of_parts(parts).hex()
    return pack_id, parts, IndexPack(pack_id, offset + len(header) + _TRAILER.size, entries, keys)


def build_pack(meta_key: bytes, blobs: list[EncodedBlob]) -> tuple[str, bytes, IndexPack]:
    """`pack_parts` joined into one buffer: (pack id, bytes, its index entry)."""
    pack_id, parts, entry = pack_parts(meta_key, blobs)
    return pack_id, b"".join(parts), entry


TRAILER_SIZE = _TRAILER.size


def parse_trailer(trailer: BytesLike, pack_size: int) -> int:
    """The header's length from a pack's last `TRAILER_SIZE` bytes (checked against its size)."""
    if len(trailer) != _TRAILER.size or pack_size < _TRAILER.size:
        raise CorruptPack("pack too short")
    header_len, magic = _TRAILER.unpack(trailer)
    if magic != PACK_MAGIC or header_len > pack_size - _TRAILER.size:
        raise CorruptPack("pack trailer is damaged")
    return int(header_len)


def read_pack_header(meta_key: bytes, data: BytesLike) -> PackHeader:
    """Parse the header from a whole pack (used to rebuild a lost index)."""
    header_len = parse_trailer(data[-_TRAILER.size :] if len(data) >= _TRAILER.size else b"", len(data))
    start = len(data) - _TRAILER.size - header_len
    header = decode_header(meta_key, data[start : start + header_len])
    if any(blob.offset < 0 or blob.length < 0 or blob.offset + blob.length > start for blob in header.blobs):
        raise CorruptPack("pack header places blobs outside the pack")
    return header


async def read_remote_pack_header(storage: Storage, meta_key: bytes, name: str, size: int) -> PackHeader:
    """A stored pack's header with two ranged reads (trailer, then header), not the whole pack."""
    header_len = parse_trailer(await storage.get(name, max(size - _TRAILER.size, 0), _TRAILER.size), size)
    start = size - _TRAILER.size - header_len
    header = decode_header(meta_key, await storage.get(name, start, header_len))
    if any(blob.offset < 0 or blob.length < 0 or blob.offset + blob.length > start for blob in header.blobs):
        raise CorruptPack("pack header places blobs outside the pack")
    return header


def index_entry(pack_id: str, size: int, header: PackHeader) -> IndexPack:
    """The index entry a pack's header describes (rebuilding a lost index)."""
    return IndexPack(pack_id, size, header.blobs, header.keys)


class Packer:
    """Collects encoded blobs into packs and writes them (pack, then its index file).

    Safe to call `add` from many tasks. A blob id already added is ignored, so repeated
    delivery of the same blob is harmless. At most `max_pending` packs, of either type, are written
    at once; `add` waits when that many are in flight (backpressure). A count, not bytes: a data
    pack ends a little over its limit, and by bytes two would not fit (bench/README.md).
    """

    def __init__(
        self,
        storage: Storage,
        meta_key: bytes,
        *,
        pack_size: int = PACK_SIZE,
        tree_pack_size: int = TREE_PACK_SIZE,
        max_pending: int = 2,
        on_written: Callable[[IndexPack], Awaitable[None] | None] | None = None,
        write_index: bool = True,
        dedup: bool = True,
    ) -> None:
        self._storage = storage
        self._meta_key = meta_key
        self._limits = {BlobType.DATA: pack_size, BlobType.TREE: min(pack_size, tree_pack_size)}
        self._open: dict[BlobType, list[EncodedBlob]] = {BlobType.DATA: [], BlobType.TREE: []}
        self._open_bytes: dict[BlobType, int] = {BlobType.DATA: 0, BlobType.TREE: 0}
        # Every id added, so a blob delivered twice is packed once (compact: one per blob of
        # the whole run). A caller that never adds an id twice says `dedup=False`.
        self._seen: IdMap | None = IdSet() if dedup else None
        self._writes: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_pending)
        self._on_written = on_written
        # The first failed write: kept here because a finished task leaves `_writes` at once,
        # so without it `flush` would not see the failure (and asyncio would log it as never
        # retrieved). Every later `add` and `flush` raises it.
        self.failure: BaseException | None = None
        # Prune writes one index for all its packs itself (a pack without one is garbage until then),
        # from `written`, or from what `on_written` told it (then none are kept here); the others
        # are told of each pack by `on_written` and keep none.
        self._write_index = write_index
        self.written: list[IndexPack] = []
        self.index_files: list[str] = []  # the ids of the index files written (with write_index)
        self.bytes_written = 0

    async def add(self, blob: EncodedBlob) -> None:
        if self.failure is not None:
            raise self.failure
        if self._seen is not None and len(blob.id) == ID_SIZE and not self._seen.add(blob.id):
            return
        self._open[blob.type].append(blob)
        self._open_bytes[blob.type] += len(blob.payload)
        if self._open_bytes[blob.type] >= self._limits[blob.type]:
            await self._seal(blob.type)

    async def _seal(self, blob_type: BlobType) -> None:
        blobs = self._open[blob_type]
        if not blobs:
            return
        self._open[blob_type] = []
        self._open_bytes[blob_type] = 0
        await self._slots.acquire()
        task = asyncio.create_task(self._write(blobs))
        self._writes.add(task)
        task.add_done_callback(self._write_done)

    def _write_done(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None and self.failure is None:
            self.failure = exc

    async def _write(self, blobs: list[EncodedBlob]) -> None:
        try:
            pack_id, parts, entry = await asyncio.to_thread(pack_parts, self._meta_key, blobs)
            blobs.clear()
            await put_once(self._storage, pack_object_name(pack_id), parts)
            del parts
            if self._write_index:
                self.index_files.append(await write_index_file(self._storage, self._meta_key, [entry]))
            if not self._write_index and self._on_written is None:
                self.written.append(entry)
            self.bytes_written += entry.size
            if self._on_written is not None:
                result = self._on_written(entry)
                if result is not None:
                    await result
        finally:
            self._slots.release()

    async def wait_for_one_write(self) -> bool:
        """Wait until one pack being written is durable; False when none is being written.

        Raises that write's failure. Lets a sender with a full window make room without sealing
        a small pack early.
        """
        if self.failure is not None:
            raise self.failure
        if not self._writes:
            return False
        await asyncio.wait(set(self._writes), return_when=asyncio.FIRST_COMPLETED)
        if self.failure is not None:
            raise self.failure
        return True

    async def flush(self) -> list[IndexPack]:
        """Write every open pack and wait until all packs are durable. Raises the first failure.

        Returns the packs written (kept only with `write_index=False` and no `on_written`, for
        the caller's index)."""
        for blob_type in (BlobType.DATA, BlobType.TREE):
            await self._seal(blob_type)
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
        if self.failure is not None:
            raise self.failure
        return self.written

    async def abort(self) -> None:
        """Drop open blobs and cancel writes in flight (used when a job is canceled)."""
        for task in list(self._writes):
            task.cancel()
        await asyncio.gather(*list(self._writes), return_exceptions=True)
        self._open = {BlobType.DATA: [], BlobType.TREE: []}
