"""The index: which pack holds each blob, merged from every `index/<id>` file.

Index files are named by the BLAKE3 hash of their bytes, and a reader checks the name: a file
copied under another name (to escape a `supersedes` list, say) is refused as damaged.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import msgspec

from timevault.core import crypto
from timevault.core.errors import CorruptIndex
from timevault.core.repository.compact import ID_SIZE, IdMap
from timevault.core.repository.format import BlobType, IndexFile, IndexPack, PackBlob
from timevault.core.repository.idruns import DiskIdSet
from timevault.core.storage import Storage
from timevault.core.storage.base import ObjectNotFound
from timevault.core.storage.once import put_once

# A listing can go stale once per concurrent compaction; more than a few in a row is no race.
LOAD_ATTEMPTS = 4
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(IndexFile)


class BlobLocation(NamedTuple):
    """Where a blob lies. A named tuple: made on every lookup, and a frozen dataclass costs
    several times as much to make."""

    pack: str
    type: BlobType
    offset: int
    length: int
    raw_length: int
    sealed_key: bytes  # the data key the blob is encrypted with (shared with its pack's entry)


def pack_object_name(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


# One blob of a pack as the index keeps it: id, type, offset, length, raw length, key number.
_PACK_BLOB = struct.Struct("<32sBIIIH")
PACK_BLOB_RECORD = _PACK_BLOB
"""A `StoredPack`'s record of one blob (prune keeps them in a file, not in memory)."""
# Where the index finds a blob: (pack number, position in that pack's records).
_WHERE = struct.Struct("<II")
_BLOB_TYPES = {int(t): t for t in BlobType}


class StoredPack:
    """A pack's index entry without a Python object per blob: its blobs as fixed-width records.

    A value too large for a record (only a damaged or hostile index has one) keeps its
    `PackBlob` beside, so every value reads back exactly as it was given.
    """

    __slots__ = ("id", "keys", "odd", "records", "size")

    def __init__(self, pack: IndexPack) -> None:
        self.id = pack.id
        self.size = pack.size
        self.keys = pack.keys
        self.odd: dict[int, PackBlob] | None = None
        parts = []
        for position, blob in enumerate(pack.blobs):
            try:
                if len(blob.id) != ID_SIZE:  # checked first: one record per blob, never two
                    raise struct.error("not a 32-byte id")
                parts.append(
                    _PACK_BLOB.pack(blob.id, blob.type, blob.offset, blob.length, blob.raw_length, blob.key)
                )
            except struct.error:
                parts.append(bytes(_PACK_BLOB.size))
                if self.odd is None:
                    self.odd = {}
                self.odd[position] = blob
        self.records = b"".join(parts)

    @classmethod
    def of_records(
        cls, pack_id: str, size: int, keys: list[bytes], records: bytes, odd: dict[int, PackBlob] | None
    ) -> StoredPack:
        """A pack from its `records` (as `records` holds them) and the values beside them."""
        stored = cls.__new__(cls)
        stored.id, stored.size, stored.keys, stored.records, stored.odd = pack_id, size, keys, records, odd
        return stored

    def __len__(self) -> int:
        return len(self.records) // _PACK_BLOB.size

    def blob(self, position: int) -> PackBlob:
        if self.odd is not None and position in self.odd:
            return self.odd[position]
        blob_id, blob_type, offset, length, raw_length, key = _PACK_BLOB.unpack_from(
            self.records, position * _PACK_BLOB.size
        )
        return PackBlob(blob_id, BlobType(blob_type), offset, length, raw_length, key)

    def entry(self) -> IndexPack:
        return IndexPack(self.id, self.size, [self.blob(i) for i in range(len(self))], self.keys)


class _Packs(Mapping[str, IndexPack]):
    """`Index.packs`: pack id -> its `IndexPack`, made when asked for (not kept).

    Holds the index's containers, not the index: a view that pointed back at its index would
    make a cycle, and an index of a million blobs would then live on until the cyclic garbage
    collector happened to run (prune loads a new index while the old one should be gone)."""

    def __init__(self, stored: list[StoredPack], pack_numbers: dict[str, int]) -> None:
        self._stored = stored
        self._pack_numbers = pack_numbers

    def __getitem__(self, pack_id: str) -> IndexPack:
        return self._stored[self._pack_numbers[pack_id]].entry()

    def __contains__(self, pack_id: object) -> bool:
        return pack_id in self._pack_numbers

    def __iter__(self) -> Iterator[str]:
        return iter(self._pack_numbers)

    def __len__(self) -> int:
        return len(self._pack_numbers)


class _Locations(Mapping[bytes, BlobLocation]):
    """`Index.blobs`: blob id -> `BlobLocation`, made when asked for (not kept). Holds the
    index's containers, not the index (see `_Packs`)."""

    def __init__(self, where: IdMap, stored: list[StoredPack], locations: bool) -> None:
        self._where = where
        self._stored = stored
        self._locations = locations

    def get(self, blob_id: bytes, default: BlobLocation | None = None) -> BlobLocation | None:  # type: ignore[override]
        if not self._locations:
            raise LookupError("this index was loaded without locations (to deduplicate only)")
        where = self._where.get(blob_id)
        if where is None:
            return default
        pack_number, position = _WHERE.unpack(where)
        stored = self._stored[pack_number]
        keys = stored.keys
        if stored.odd is not None and position in stored.odd:
            blob = stored.odd[position]
            blob_type, offset, length, raw_length, key = blob.type, blob.offset, blob.length, blob.raw_length, blob.key
        else:  # straight from the record, without a PackBlob in between (a restore asks per blob)
            _, blob_type, offset, length, raw_length, key = _PACK_BLOB.unpack_from(
                stored.records, position * _PACK_BLOB.size
            )
        # A key number out of range leaves an empty key: the blob then fails to open.
        sealed = keys[key] if 0 <= key < len(keys) else b""
        return BlobLocation(stored.id, _BLOB_TYPES[blob_type], offset, length, raw_length, sealed)

    def __getitem__(self, blob_id: bytes) -> BlobLocation:
        location = self.get(blob_id)
        if location is None:
            raise KeyError(blob_id)
        return location

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._where

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


class Index:
    """Blob id -> location, built by `load` and grown as packs are written.

    Held compactly (see `timevault.core.repository.compact`): ~90 bytes a blob rather than the
    ~350 of a dict of objects, so a million small files do not cost a third of a GiB. `blobs`
    and `packs` read like the dicts they replaced; their values are made on each access.
    """

    def __init__(self, *, locations: bool = True) -> None:
        # Without locations (`load(..., locations=False)`) the index is only the set of blob ids
        # (~32 bytes a blob): all a backup needs to deduplicate.
        self.locations = locations
        self._where = IdMap(_WHERE.size if locations else 0)
        self._stored: list[StoredPack] = []
        self._pack_numbers: dict[str, int] = {}
        self.blobs: Mapping[bytes, BlobLocation] = _Locations(self._where, self._stored, locations)
        self.packs: Mapping[str, IndexPack] = _Packs(self._stored, self._pack_numbers)
        self.files: set[str] = set()
        self.damaged_files: set[str] = set()  # ids of index files that did not load

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self._where

    def add_pack(self, pack: IndexPack) -> None:
        self.add_stored(StoredPack(pack))

    def add_stored(self, stored: StoredPack) -> None:
        """Add a pack already held compactly (shared, not copied: a `LoadedIndexFile`'s)."""
        number = len(self._stored)
        self._stored.append(stored)
        self._pack_numbers[stored.id] = number
        where, add, records, size = _WHERE.pack, self._where.add, stored.records, _PACK_BLOB.size
        odd = stored.odd or {}
        for position in range(len(stored)):
            blob_id = odd[position].id if position in odd else records[position * size : position * size + ID_SIZE]
            if len(blob_id) != ID_SIZE:
                continue
            if self.locations:
                add(blob_id, where(number, position))  # the first pack named keeps the blob
            else:
                add(blob_id)
        if not self.locations:
            stored.records, stored.odd = b"", None

    def pack_size(self, pack_id: str) -> int | None:
        """The stored size of a pack, or None when the index does not list it (cheaper than
        `packs[pack_id].size`, which makes the pack's whole entry)."""
        number = self._pack_numbers.get(pack_id)
        return None if number is None else self._stored[number].size

    def pack_blob_count(self, pack_id: str) -> int:
        """How many blobs the index lists in a pack (0 when it does not list the pack)."""
        number = self._pack_numbers.get(pack_id)
        return 0 if number is None else len(self._stored[number])

    def stored_size(self) -> int:
        return sum(self._stored[number].size for number in self._pack_numbers.values())

    @classmethod
    async def load(
        cls, storage: Storage, meta_key: bytes, errors: list[str] | None = None, *, locations: bool = True
    ) -> Index:
        """Merge every index file. Damaged files raise CorruptIndex, or go to `errors` if given.

        A prune may compact the index while this reads it: it writes the file that supersedes the
        old ones before it deletes them, so a listed file that is gone when fetched means "list
        again"; the new listing holds its replacement."""
        for attempt in range(1, LOAD_ATTEMPTS + 1):
            try:
                return await cls._load_listed(storage, meta_key, errors, locations)
            except ObjectNotFound:
                if attempt == LOAD_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    async def _load_listed(
        cls, storage: Storage, meta_key: bytes, errors: list[str] | None, locations: bool
    ) -> Index:
        loaded: dict[int, tuple[str, LoadedIndexFile]] = {}

        def take(position: int, name: str, file: IndexFile) -> None:
            # Made compact at once: the decoded file (an object per blob) is let go before
            # the next one is read, not held until every file is in.
            loaded[position] = (name, LoadedIndexFile.of(file))

        index = cls(locations=locations)
        index.damaged_files = await read_index_files(storage, meta_key, errors, take)
        superseded: set[str] = set()
        for _, file in loaded.values():
            superseded.update(file.supersedes)
        for position in sorted(loaded):  # listing order: the first pack named keeps a blob
            name, file = loaded[position]
            file_id = name.removeprefix("index/")
            if file_id in superseded:
                continue
            index.files.add(file_id)
            for stored in file.packs:
                index.add_stored(stored)
        return index

    def locate(self, blob_id: bytes) -> BlobLocation | None:
        """Where `blob_id` lies (`BlobLookup`), or None."""
        return self.blobs.get(blob_id)


class BlobLookup(Protocol):
    """What reading a blob needs of an index: the in-memory `Index`, or a restore's table on
    disk (`timevault.core.repository.locations`)."""

    def locate(self, blob_id: bytes) -> BlobLocation | None: ...

    def pack_size(self, pack_id: str) -> int | None: ...


async def read_index_files(
    storage: Storage,
    meta_key: bytes,
    errors: list[str] | None,
    take: Callable[[int, str, IndexFile], None],
) -> set[str]:
    """Fetch, check and decode every listed index file, handing each to `take` (with its place
    in the listing and its name) as soon as it is decoded: one decoded file at a time is alive,
    never all of them. Returns the ids of damaged files; their errors raise CorruptIndex, or go
    to `errors` if given (only once the whole listing was read: a retry starts afresh)."""
    names = [info.name async for info in storage.list("index/")]
    sem = asyncio.Semaphore(16)
    damaged: set[str] = set()
    notes: list[str] = []

    async def fetch(position: int, name: str) -> None:
        async with sem:
            try:
                data = await storage.get(name)
                if crypto.content_hash(data).hex() != name.removeprefix("index/"):
                    raise CorruptIndex("index file does not match its name (renamed or changed)")
                file = decode_index_file(meta_key, data)
                del data
                take(position, name, file)
            except CorruptIndex as exc:
                if errors is None:
                    raise CorruptIndex(f"{storage.location}: {name}: {exc}") from exc
                notes.append(f"{name}: {exc}")
                damaged.add(name.removeprefix("index/"))

    await asyncio.gather(*(fetch(position, name) for position, name in enumerate(names)))
    if errors is not None:
        errors.extend(notes)
    return damaged


async def load_stored_ids(
    storage: Storage, meta_key: bytes, make_set: Callable[[], DiskIdSet]
) -> tuple[DiskIdSet, set[str]]:
    """Every blob id the index files list, into a fresh `make_set()`, and the ids of the index
    files read: what a backup deduplicates against, without locations and without holding the
    ids in memory.

    Ids are added as each file arrives. Files that another file supersedes (a compaction not
    yet finished deleting them) are only known once every file is read; when any was read,
    the ids are read again without them, so that no blob prune took out counts as stored.
    """
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        try:
            return await _load_ids_listed(storage, meta_key, make_set)
        except ObjectNotFound:
            if attempt == LOAD_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def index_file_ids(storage: Storage) -> set[str]:
    """The ids of the index files there are now."""
    return {info.name.removeprefix("index/") async for info in storage.list("index/")}


async def add_index_files(
    storage: Storage, meta_key: bytes, ids: DiskIdSet, file_ids: Iterable[str]
) -> tuple[set[str], set[str]]:
    """Add the blob ids that these index files list to `ids`; returns (the files read, the
    files they supersede). ObjectNotFound when one is gone meanwhile."""
    sem = asyncio.Semaphore(16)
    superseded: set[str] = set()
    loaded: set[str] = set()

    async def add_file(file_id: str) -> None:
        async with sem:
            name = f"index/{file_id}"
            data = await storage.get(name)
            try:
                if crypto.content_hash(data).hex() != file_id:
                    raise CorruptIndex("index file does not match its name (renamed or changed)")
                file = decode_index_file(meta_key, data)
            except CorruptIndex as exc:
                raise CorruptIndex(f"{storage.location}: {name}: {exc}") from exc
            del data
            # Added at once, with no await in between: a decoded file is let go before the
            # next one is read (results waiting for a consumer would pile up a file each).
            ids.seed([blob.id for pack in file.packs for blob in pack.blobs if len(blob.id) == ID_SIZE])
            superseded.update(file.supersedes)
            loaded.add(file_id)

    tasks = [asyncio.ensure_future(add_file(file_id)) for file_id in file_ids]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return loaded, superseded


async def _load_ids_listed(
    storage: Storage, meta_key: bytes, make_set: Callable[[], DiskIdSet]
) -> tuple[DiskIdSet, set[str]]:
    file_ids = await index_file_ids(storage)
    skip: set[str] = set()
    while True:
        ids = make_set()
        try:
            loaded, superseded = await add_index_files(storage, meta_key, ids, sorted(file_ids - skip))
            if not superseded & loaded:
                return ids, loaded
            skip = superseded  # read again, without them (a second pass finds none)
            ids.close()
        except BaseException:
            ids.close()
            raise


@dataclass(slots=True)
class LoadedIndexFile:
    """An index file as held after loading: its packs compact, not an object per blob."""

    supersedes: list[str]
    packs: list[StoredPack]
    compacted: bool = False

    @classmethod
    def of(cls, file: IndexFile) -> LoadedIndexFile:
        return cls(file.supersedes, [StoredPack(pack) for pack in file.packs], file.compacted)


def decode_index_file(meta_key: bytes, data: bytes) -> IndexFile:
    try:
        return _decoder.decode(crypto.decrypt(meta_key, data, b"index"))
    except (crypto.Unauthenticated, msgspec.DecodeError) as exc:
        raise CorruptIndex(f"index file is damaged: {exc}") from exc


def encode_index_file(
    meta_key: bytes, packs: list[IndexPack], supersedes: list[str] | None = None, *, compacted: bool = False
) -> tuple[str, bytes]:
    """(id, stored bytes) of an index file: its id is the hash of its ciphertext."""
    plaintext = _encoder.encode(IndexFile(packs=packs, supersedes=supersedes or [], compacted=compacted))
    data = crypto.encrypt(meta_key, plaintext, b"index")
    return crypto.content_hash(data).hex(), data


async def write_index_file(
    storage: Storage, meta_key: bytes, packs: list[IndexPack], supersedes: list[str] | None = None,
    *, compacted: bool = False,
) -> str:
    """Write one index file and return its id (a hash of its ciphertext)."""
    file_id, data = encode_index_file(meta_key, packs, supersedes, compacted=compacted)
    await put_once(storage, f"index/{file_id}", data)
    return file_id


__all__ = [
    "PACK_BLOB_RECORD",
    "BlobLocation",
    "BlobLookup",
    "CorruptIndex",
    "Index",
    "LoadedIndexFile",
    "PackBlob",
    "StoredPack",
    "decode_index_file",
    "encode_index_file",
    "pack_object_name",
    "read_index_files",
    "write_index_file",
]
