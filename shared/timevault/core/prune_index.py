"""The index as prune reads it: its packs in memory, their blobs in an unnamed temporary file.

Prune decides per pack whether it stays, goes or is repacked, by the bytes of live blobs the
pack holds. Held in memory, the index costs ~90 bytes a blob and the set of live blobs another
~40 (a million small files: ~150 MiB). Here only a pack's id, size and keys stay in memory
(packs are large: a few hundred per GiB); each pack's blob records (the fixed-width records of
`StoredPack`, 47 bytes a blob) are appended to a temporary file as its index file is read, and
read back when a pack's entry is needed again (to repack it, or to write the new index).

Counting live blobs is a join of two sorted streams, one group of ids (their first byte) at a
time, so no more than 1/256 of either side is in memory at once:

1. the live ids (`IdRuns`: the lists of references spilled to sorted runs) give, per group,
   a set of a few thousand ids even at a million blobs;
2. the blob records are *partitioned* by group into a second temporary file: the packs are
   read in index order (the first pack named keeps a blob that several list, as in `Index`)
   and each record goes, with its pack's number and place, into its group's buffer; full
   buffers are written as a *chunk* (every group back to back, and where each starts). A
   group is then every chunk's part of it, in order: still in index order.

Neither file is mapped (mapped pages would count in the process's RSS): `pread` only.
"""

from __future__ import annotations

import os
import struct
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from timevault.core.fileio import pread_exactly, pwrite_all
from timevault.core.repository.compact import ID_SIZE
from timevault.core.repository.format import IndexPack, PackBlob
from timevault.core.repository.index import PACK_BLOB_RECORD, StoredPack

_GROUPS = 256
# A blob as the partition keeps it: id, pack number (in index order), place in the pack, length.
_KEY = struct.Struct("<32sIII")
# Records buffered before a chunk is written (~6 MiB of small bytes objects).
PARTITION_CHUNK = 1 << 16


class _TempFile:
    """An unnamed temporary file read and written with `pread`/`pwrite` only."""

    def __init__(self, directory: str | None) -> None:
        handle = tempfile.TemporaryFile(prefix="timevault-prune-", dir=directory)
        self._fd = os.dup(handle.fileno())  # unlinked already: gone when closed, or when the process dies
        handle.close()
        self.size = 0

    def append(self, data: bytes | bytearray | memoryview) -> int:
        """Write `data` at the end; returns where it starts."""
        offset = self.size
        view = memoryview(data)
        pwrite_all(self._fd, view, offset)
        self.size += view.nbytes
        return offset

    def read(self, offset: int, size: int) -> bytes:
        return pread_exactly(self._fd, size, offset, "prune's temporary file")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class SpilledPack:
    """A pack of the index: id, size and keys in memory, its blob records in the spill file."""

    __slots__ = ("count", "id", "keys", "odd", "offset", "size")

    def __init__(self, stored: StoredPack, offset: int) -> None:
        self.id = stored.id
        self.size = stored.size
        self.keys = stored.keys
        self.odd = stored.odd  # values that do not fit a record (a damaged or hostile index only)
        self.offset = offset
        self.count = len(stored)


@dataclass
class PackCounts:
    """What the join found, per pack (lists indexed by the pack's number in `packs`)."""

    packs: list[SpilledPack]
    size: list[int]
    """Bytes of all its blobs."""
    owned_live: list[int]
    """Bytes of the live blobs it keeps (the first pack in index order that lists a blob keeps it)."""
    live: list[int]
    """Bytes of its live blobs, kept here or not."""
    dead: list[int]
    """Blobs no snapshot needs."""
    spare: list[bool]
    """Whether it holds a blob it need not keep (not live, or kept by another pack)."""
    keep: list[bytearray]
    """Per blob, 1 when it is live and kept here: what a repack copies."""
    missing: set[bytes] = field(default_factory=set)
    """Live ids no pack lists."""


class SpilledIndex:
    """The packs of an index in index order, their records in a temporary file (`directory`;
    None: the system's temp folder). Adding the same pack id again keeps the first (as `Index`)."""

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory
        self._file = _TempFile(directory)
        self.packs: dict[str, SpilledPack] = {}

    def __len__(self) -> int:
        return len(self.packs)

    def __contains__(self, pack_id: object) -> bool:
        return pack_id in self.packs

    def __iter__(self) -> Iterator[str]:
        return iter(self.packs)

    def close(self) -> None:
        self._file.close()

    def clear(self) -> None:
        """No packs in the index any more; what was spilled stays readable (`entry` of a
        `SpilledPack` kept elsewhere), so a new index can be made of packs already spilled."""
        self.packs = {}

    def spill(self, pack: IndexPack) -> SpilledPack:
        """Write `pack`'s blob records to the file; the pack is not in the index yet (`add`)."""
        stored = StoredPack(pack)
        return SpilledPack(stored, self._file.append(stored.records))

    def add(self, spilled: SpilledPack) -> None:
        self.packs.setdefault(spilled.id, spilled)

    def add_pack(self, pack: IndexPack) -> None:
        self.add(self.spill(pack))

    def entry(self, pack: SpilledPack | str) -> IndexPack:
        """The pack's whole entry, read back from the file."""
        spilled = self.packs[pack] if isinstance(pack, str) else pack
        records = self._file.read(spilled.offset, spilled.count * PACK_BLOB_RECORD.size)
        return StoredPack.of_records(spilled.id, spilled.size, spilled.keys, records, spilled.odd).entry()

    def blobs(self, spilled: SpilledPack) -> Iterator[tuple[bytes, int]]:
        """(id, length) of each blob of the pack, in order (ids as stored: maybe not 32 bytes)."""
        records = self._file.read(spilled.offset, spilled.count * PACK_BLOB_RECORD.size)
        odd = spilled.odd
        for position, (blob_id, _, _, length, _, _) in enumerate(PACK_BLOB_RECORD.iter_unpack(records)):
            if odd is not None and position in odd:
                blob: PackBlob = odd[position]
                yield blob.id, blob.length
            else:
                yield blob_id, length

    def count_live(self, live: Iterable[bytes]) -> PackCounts:
        """Join the packs with `live` (blocks of sorted ids back to back, as `IdRuns.sorted_blocks`)."""
        packs = list(self.packs.values())
        counts = PackCounts(
            packs, [0] * len(packs), [0] * len(packs), [0] * len(packs), [0] * len(packs),
            [False] * len(packs), [bytearray(pack.count) for pack in packs],
        )
        partition = _Partition(self._directory)
        try:
            for number, pack in enumerate(packs):
                for position, (blob_id, length) in enumerate(self.blobs(pack)):
                    counts.size[number] += length
                    if len(blob_id) != ID_SIZE:  # no snapshot can name it (as `Index`, which leaves it out)
                        counts.dead[number] += 1
                        counts.spare[number] = True
                    else:
                        partition.add(blob_id, number, position, length)
            partition.finish()
            groups = _live_groups(live)
            for group in range(_GROUPS):
                _join_group(partition.group(group), next(groups), counts)
        finally:
            partition.close()
        return counts


def _join_group(records: bytes, live: set[bytes], counts: PackCounts) -> None:
    """Count one group: its records in index order, its live ids."""
    owned_live, any_live, dead, spare, keep = counts.owned_live, counts.live, counts.dead, counts.spare, counts.keep
    seen: set[bytes] = set()
    for blob_id, number, position, length in _KEY.iter_unpack(records):
        first = blob_id not in seen
        if first:
            seen.add(blob_id)
        if blob_id in live:
            any_live[number] += length
            if first:
                owned_live[number] += length
                keep[number][position] = 1
            else:
                spare[number] = True
        else:
            dead[number] += 1
            spare[number] = True
    live.difference_update(seen)
    counts.missing.update(live)


def _live_groups(blocks: Iterable[bytes]) -> Iterator[set[bytes]]:
    """The ids of sorted `blocks`, as one set per group (first byte), for every group in order."""
    group, current = 0, set[bytes]()
    for block in blocks:
        if len(block) % ID_SIZE:
            raise ValueError("not whole 32-byte ids")
        for offset in range(0, len(block), ID_SIZE):
            first = block[offset]
            while first > group:
                yield current
                group, current = group + 1, set()
            current.add(block[offset : offset + ID_SIZE])
    while group < _GROUPS:
        yield current
        group, current = group + 1, set()


class _Partition:
    """Blob keys (`_KEY`) grouped by the id's first byte, in a temporary file, in the order
    they were added within each group."""

    def __init__(self, directory: str | None) -> None:
        self._file = _TempFile(directory)
        self._buffers: list[list[bytes]] = [[] for _ in range(_GROUPS)]
        self._buffered = 0
        self._chunks: list[array[int]] = []  # per chunk: where each group starts (and the end)

    def add(self, blob_id: bytes, number: int, position: int, length: int) -> None:
        self._buffers[blob_id[0]].append(_KEY.pack(blob_id, number, position, length))
        self._buffered += 1
        if self._buffered >= PARTITION_CHUNK:
            self._write_chunk()

    def finish(self) -> None:
        self._write_chunk()

    def _write_chunk(self) -> None:
        if not self._buffered:
            return
        starts = array("Q", bytes(8 * (_GROUPS + 1)))
        at = self._file.size
        for group, keys in enumerate(self._buffers):
            starts[group] = at
            at += len(keys) * _KEY.size
        starts[_GROUPS] = at
        self._file.append(b"".join(b"".join(keys) for keys in self._buffers))
        self._chunks.append(starts)
        self._buffers = [[] for _ in range(_GROUPS)]
        self._buffered = 0

    def group(self, group: int) -> bytes:
        parts = [
            self._file.read(starts[group], starts[group + 1] - starts[group])
            for starts in self._chunks
            if starts[group + 1] > starts[group]
        ]
        return b"".join(parts)

    def close(self) -> None:
        self._file.close()


__all__ = ["PARTITION_CHUNK", "PackCounts", "SpilledIndex", "SpilledPack"]
