"""Where every blob lies, for one restore: a table in a temporary file, not in memory.

A restore looks up every blob of the snapshot once. The in-memory `Index` costs ~90 bytes a
blob (and more while it is built): a restore of a million small files held ~110 MiB for it
alone, the part of its memory that grew with the files. This table keeps a fixed-width record
per blob in an unnamed temporary file and only the start of each of its 65536 buckets in
memory (512 KiB), so memory stays the same at any number of blobs. A lookup reads one bucket
(a few dozen records even at 10 million blobs) with one `pread` from the page cache. The file
is read with `pread`, never mapped: mapped pages would count in the process's RSS.

Records: id (32 bytes) ‖ type ‖ pack number ‖ offset ‖ length ‖ raw length ‖ key number,
little-endian. Ids are keyed hashes, so their first two bytes spread them evenly over the
buckets. The table is built from the index files as they are read (the same rules as `Index`:
files superseded by another are left out, the first pack named keeps a blob that several list)
in two steps that each hold 1/256 of it at most:

1. each index file's records are appended to a staging file, grouped by the id's first byte,
   and the file remembers where each group starts (257 offsets);
2. `finish` builds the table group by group: the group's records from every file that is not
   superseded, in listing order, sorted stably by the id's second byte (their bucket).

Values that do not fit a record (only a damaged or hostile index has them) stay in memory,
pointed to from their record, so every value reads back exactly as it was given.
"""

from __future__ import annotations

import os
import struct
import tempfile
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from operator import itemgetter
from typing import BinaryIO

from timevault.core.fileio import pread_exactly, pwrite_all
from timevault.core.repository.compact import ID_SIZE
from timevault.core.repository.format import BlobType, IndexFile, IndexPack, PackBlob
from timevault.core.repository.index import LOAD_ATTEMPTS, BlobLocation, read_index_files
from timevault.core.storage import Storage
from timevault.core.storage.base import ObjectNotFound

_RECORD = struct.Struct("<32sBIIIIH")
RECORD_SIZE = _RECORD.size
_GROUPS = 256
_BUCKETS = _GROUPS * 256
# A record whose values do not fit: its pack number is this, its offset the place in `_odd`.
_ODD = 0xFFFFFFFF
_BLOB_TYPES = {int(t): t for t in BlobType}
_second_byte = itemgetter(1)
_unpack_record = _RECORD.unpack_from


@dataclass(slots=True)
class _Pack:
    id: str
    size: int
    keys: list[bytes]


@dataclass(slots=True)
class _Staged:
    """One index file in the staging file: where each group of its records starts."""

    position: int  # in the listing: files are merged in this order
    name: str | None  # None for packs read from their own headers (never superseded)
    supersedes: list[str]
    first_pack: int  # its packs are numbers first_pack .. first_pack + pack_count - 1
    pack_count: int
    starts: array[int]  # 257 offsets into the staging file


class LocationsBuilder:
    """Collects index files (in any order) and builds a `BlobLocations` from them."""

    def __init__(self, temp_dir: str | None = None) -> None:
        self._temp_dir = temp_dir
        self._staging: BinaryIO = tempfile.TemporaryFile(dir=temp_dir, buffering=0)
        self._staged_size = 0
        self._files: list[_Staged] = []
        self._packs: list[_Pack] = []  # every pack staged, also of files superseded later
        self._odd: list[tuple[int, PackBlob]] = []
        self._last_position = -1

    def add_file(self, position: int, name: str | None, packs: list[IndexPack], supersedes: list[str]) -> None:
        """Stage one index file's packs; `position` orders files (the index listing's order)."""
        groups: list[list[bytes]] = [[] for _ in range(_GROUPS)]
        record = _RECORD.pack
        first_pack = len(self._packs)
        for pack in packs:
            number = len(self._packs)
            self._packs.append(_Pack(pack.id, pack.size, list(pack.keys)))
            for blob in pack.blobs:
                blob_id = blob.id
                if len(blob_id) != ID_SIZE:
                    continue  # not an id anyone can ask for (as in `Index`)
                try:
                    packed = record(blob_id, blob.type, number, blob.offset, blob.length, blob.raw_length, blob.key)
                except struct.error:
                    packed = record(blob_id, blob.type, _ODD, len(self._odd), 0, 0, 0)
                    self._odd.append((number, blob))
                groups[blob_id[0]].append(packed)
        starts = array("Q", bytes(8 * (_GROUPS + 1)))
        at = self._staged_size
        for group, records in enumerate(groups):
            starts[group] = at
            at += len(records) * RECORD_SIZE
        starts[_GROUPS] = at
        pwrite_all(self._staging.fileno(), b"".join(b"".join(records) for records in groups), self._staged_size)
        self._staged_size = at
        self._last_position = max(self._last_position, position)
        self._files.append(_Staged(position, name, list(supersedes), first_pack, len(packs), starts))

    def add_index_file(self, position: int, name: str, file: IndexFile) -> None:
        self.add_file(position, name, file.packs, file.supersedes)

    def add_packs(self, packs: list[IndexPack]) -> None:
        """Packs that no index file lists (read from their own headers): after every file."""
        self.add_file(self._last_position + 1, None, packs, [])

    def _live(self) -> list[_Staged]:
        """The files the table is made of (none that another supersedes), in listing order."""
        superseded = {file_id for staged in self._files for file_id in staged.supersedes}
        live = [
            staged for staged in self._files
            if staged.name is None or staged.name.removeprefix("index/") not in superseded
        ]
        live.sort(key=lambda staged: staged.position)
        return live

    def live_packs(self) -> set[str]:
        """Ids of the packs the table would list now."""
        return {
            self._packs[number].id
            for staged in self._live()
            for number in range(staged.first_pack, staged.first_pack + staged.pack_count)
        }

    def live_files(self) -> set[str]:
        """Ids of the index files the table would be made of now."""
        return {staged.name.removeprefix("index/") for staged in self._live() if staged.name is not None}

    def finish(self) -> BlobLocations:
        """The table. The builder is done with (its staging file is closed)."""
        try:
            live = self._live()
            table: BinaryIO = tempfile.TemporaryFile(dir=self._temp_dir, buffering=0)
            try:
                bucket_starts = _build(self._staging.fileno(), table.fileno(), live)
            except BaseException:
                table.close()
                raise
        finally:
            self._staging.close()
        pack_numbers: dict[str, int] = {}
        for staged in live:
            for number in range(staged.first_pack, staged.first_pack + staged.pack_count):
                pack_numbers[self._packs[number].id] = number
        return BlobLocations(table, bucket_starts, self._packs, pack_numbers, self._odd)

    def close(self) -> None:
        self._staging.close()


def _build(staging: int, out: int, live: list[_Staged]) -> array[int]:
    """Write the table group by group; return where each bucket starts (in records)."""
    bucket_starts = array("Q", bytes(8 * (_BUCKETS + 1)))
    count = 0
    for group in range(_GROUPS):
        parts = []
        for staged in live:
            start, end = staged.starts[group], staged.starts[group + 1]
            if end > start:
                parts.append(pread_exactly(staging, end - start, start, "the blob location table"))
        data = b"".join(parts)
        del parts
        records = [data[at : at + RECORD_SIZE] for at in range(0, len(data), RECORD_SIZE)]
        del data
        records.sort(key=_second_byte)  # stable: the first file (and pack) to name a blob stays first
        base = group * 256
        for bucket in range(256):
            bucket_starts[base + bucket] = count + bisect_left(records, bucket, key=_second_byte)
        pwrite_all(out, b"".join(records), count * RECORD_SIZE)
        count += len(records)
    bucket_starts[_BUCKETS] = count
    return bucket_starts


class BlobLocations:
    """Blob id -> `BlobLocation`, read from the table file (`BlobLookup`, like `Index`).

    Lookups may come from any thread (`pread` has no shared file position). `close` removes
    the file (it has no name: it goes when its descriptor is closed, also when the process dies).
    """

    def __init__(
        self,
        table: BinaryIO,
        bucket_starts: array[int],
        packs: list[_Pack],
        pack_numbers: dict[str, int],
        odd: list[tuple[int, PackBlob]],
    ) -> None:
        self._table = table
        self._fd = table.fileno()
        self._starts = bucket_starts
        self._packs = packs
        self._pack_numbers = pack_numbers
        self._odd = odd

    def __len__(self) -> int:
        return self._starts[_BUCKETS]

    def __enter__(self) -> BlobLocations:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._table.close()

    def has_pack(self, pack_id: str) -> bool:
        return pack_id in self._pack_numbers

    def pack_size(self, pack_id: str) -> int | None:
        number = self._pack_numbers.get(pack_id)
        return None if number is None else self._packs[number].size

    def __contains__(self, blob_id: object) -> bool:
        return isinstance(blob_id, bytes) and self.locate(blob_id) is not None

    def bucket_ids(self, first: int, end: int) -> list[bytes]:
        """The ids of the records in buckets (two-byte prefixes) `first` to `end` - 1, in table
        order (a blob several packs hold comes more than once): a check reads the index a
        stretch at a time this way."""
        lo, hi = self._starts[first], self._starts[end]
        data = pread_exactly(self._fd, (hi - lo) * RECORD_SIZE, lo * RECORD_SIZE, "the blob location table")
        return [data[at : at + ID_SIZE] for at in range(0, len(data), RECORD_SIZE)]

    def locate(self, blob_id: bytes) -> BlobLocation | None:
        """Where `blob_id` lies, or None. One `pread` of its bucket (a restore asks once per blob:
        kept short)."""
        if len(blob_id) != ID_SIZE:
            return None
        bucket = blob_id[0] << 8 | blob_id[1]
        starts = self._starts
        lo, hi = starts[bucket], starts[bucket + 1]
        if lo == hi:
            return None
        size = (hi - lo) * RECORD_SIZE
        data = os.pread(self._fd, size, lo * RECORD_SIZE)
        if len(data) != size:
            data = pread_exactly(self._fd, size, lo * RECORD_SIZE, "the blob location table")
        pos = data.find(blob_id)
        # A match must start a record (an id's bytes might also appear across two records).
        while pos % RECORD_SIZE and pos >= 0:
            pos = data.find(blob_id, pos + 1)
        if pos < 0:
            return None
        _, blob_type, number, offset, length, raw_length, key = _unpack_record(data, pos)
        if number == _ODD:
            number, blob = self._odd[offset]
            offset, length, raw_length, key = blob.offset, blob.length, blob.raw_length, blob.key
        pack = self._packs[number]
        keys = pack.keys
        # A key number out of range leaves an empty key: the blob then fails to open (as `Index`).
        sealed = keys[key] if 0 <= key < len(keys) else b""
        return BlobLocation(pack.id, _BLOB_TYPES[blob_type], offset, length, raw_length, sealed)

    get = locate


async def load_locations(
    storage: Storage, meta_key: bytes, errors: list[str] | None, *, temp_dir: str | None = None
) -> LocationsBuilder:
    """Stage every index file as it is read (as `Index.load`: damaged files raise CorruptIndex
    or go to `errors`; a file gone while listed means a compaction ran: list again). The caller
    may add packs from their headers, then calls `finish` (or `close`)."""
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        builder = LocationsBuilder(temp_dir)
        notes: list[str] = []
        try:
            await read_index_files(
                storage, meta_key, notes if errors is not None else None,
                builder.add_index_file,
            )
        except ObjectNotFound:
            builder.close()
            if attempt == LOAD_ATTEMPTS:
                raise
            continue
        except BaseException:
            builder.close()
            raise
        if errors is not None:
            errors.extend(notes)
        return builder
    raise AssertionError("unreachable")




