"""Sets and maps of 32-byte blob ids held as bytes, not as a Python object per id.

A Python set costs ~100 bytes an id (the bytes object and its slot), a dict of small objects
several times that; a backup of a million small files holds a million ids in its index, in
the blobs it references and in the blobs it scheduled. Here an id costs its 32 bytes plus a
fixed-width value, and memory stays a small multiple of the data.

Ids are keyed hashes, so their first two bytes spread them evenly over 65536 buckets. The
records (id ‖ value) live in 256 `bytes` groups, one per first byte, grouped inside by the
second byte; an offset table per group says where each bucket starts. A lookup searches its
bucket (a few dozen records even at 10 million ids) with `bytes.find`, in C. New ids wait in
a small dict and are merged in batches of `MERGE_AT`, one group at a time (a merge never
copies more than one group, 1/256 of the records, at once).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Container, Iterable, Iterator

ID_SIZE = 32
MERGE_AT = 1 << 16
_GROUPS = 256
_BUCKETS = 256


def _empty_starts() -> array[int]:
    return array("I", bytes(4 * (_BUCKETS + 1)))


class IdMap:
    """A map from 32-byte ids to fixed-size byte values (`value_size` bytes; 0: a set).

    The first value given for an id is kept (`add` returns False for an id already in).
    """

    def __init__(self, value_size: int = 0, ids: Iterable[bytes] = ()) -> None:
        self._value_size = value_size
        self._record = ID_SIZE + value_size
        self._groups: list[bytes] = [b""] * _GROUPS
        self._starts: list[array[int]] = [_empty_starts() for _ in range(_GROUPS)]
        self._pending: dict[bytes, bytes] = {}
        self._merged = 0
        for blob_id in ids:
            self.add(blob_id)

    @classmethod
    def from_sorted(cls, data: bytes | memoryview) -> IdMap:
        """A set of the ids in `data`: sorted 32-byte ids back to back (a list of references)."""
        ids = cls()
        ids.add_sorted(data)
        return ids

    def __len__(self) -> int:
        return self._merged + len(self._pending)

    def __contains__(self, blob_id: object) -> bool:
        if blob_id in self._pending:
            return True
        return isinstance(blob_id, bytes) and self._find(blob_id) >= 0

    def get(self, blob_id: bytes) -> bytes | None:
        """The value stored for `blob_id` (b"" in a set), or None."""
        value = self._pending.get(blob_id)
        if value is not None:
            return value
        pos = self._find(blob_id)
        if pos < 0:
            return None
        return self._groups[blob_id[0]][pos + ID_SIZE : pos + self._record]

    def _find(self, blob_id: bytes) -> int:
        """Where `blob_id`'s record starts in its group, or -1 (pending ids not included)."""
        if len(blob_id) != ID_SIZE:
            return -1
        first = blob_id[0]
        group = self._groups[first]
        if not group:
            return -1
        starts = self._starts[first]
        record = self._record
        bucket = blob_id[1]
        lo, hi = starts[bucket] * record, starts[bucket + 1] * record
        pos = group.find(blob_id, lo, hi)
        # A match must start a record (an id's bytes might also appear across two records).
        while pos >= 0 and (pos - lo) % record:
            pos = group.find(blob_id, pos + 1, hi)
        return pos

    def add(self, blob_id: bytes, value: bytes = b"") -> bool:
        """Add `blob_id` with `value`; False (and nothing changes) when it is already in."""
        if len(blob_id) != ID_SIZE or len(value) != self._value_size:
            raise ValueError(f"an id is {ID_SIZE} bytes and a value {self._value_size}")
        pending = self._pending
        if blob_id in pending or self._find(blob_id) >= 0:
            return False
        pending[bytes(blob_id)] = bytes(value)
        if len(pending) >= MERGE_AT:
            self._merge()
        return True

    def update(self, ids: Iterable[bytes]) -> None:
        """Add many ids (to a set): `add` without its per-call checks, for hot loops."""
        if self._value_size:
            raise ValueError("update adds to a set, not to a map")
        pending, find = self._pending, self._find
        for blob_id in ids:
            if blob_id in pending:
                continue
            if len(blob_id) != ID_SIZE:
                raise ValueError(f"an id is {ID_SIZE} bytes")
            if find(blob_id) >= 0:
                continue
            pending[bytes(blob_id)] = b""
            if len(pending) >= MERGE_AT:
                self._merge()
                pending = self._pending

    def add_sorted(self, data: bytes | memoryview, leave_out: Container[bytes] = frozenset()) -> None:
        """Add (to a set) the sorted ids of `data`, 32 bytes each back to back (a list of
        references), except those in `leave_out`: merged group by group, so no Python object
        per id outlives its group (a million ids cost 32 MiB here, not a set's ~100 MiB)."""
        if self._value_size:
            raise ValueError("add_sorted adds to a set, not to a map")
        if len(data) % ID_SIZE:
            raise ValueError("not whole 32-byte ids")
        self._merge()
        view = memoryview(data)
        count = len(data) // ID_SIZE
        start = 0
        while start < count:
            first = view[start * ID_SIZE]
            end = bisect.bisect_right(range(count), first, lo=start, key=lambda i: view[i * ID_SIZE])
            new: list[tuple[bytes, bytes]] = []
            previous = b""
            for offset in range(start * ID_SIZE, end * ID_SIZE, ID_SIZE):
                blob_id = bytes(view[offset : offset + ID_SIZE])
                if blob_id <= previous:
                    if blob_id == previous:
                        continue
                    raise ValueError("ids are not sorted")
                previous = blob_id
                if blob_id not in leave_out and self._find(blob_id) < 0:
                    new.append((blob_id, b""))
            if new:
                self._merge_group(first, new)
                self._merged += len(new)
            start = end

    def __iter__(self) -> Iterator[bytes]:
        """Every id, in no particular order."""
        record = self._record
        for group in self._groups:
            for offset in range(0, len(group), record):
                yield group[offset : offset + ID_SIZE]
        yield from list(self._pending)

    def sorted_ids(self) -> bytearray:
        """Every id, sorted, back to back (the form of a list of references)."""
        self._merge()
        # Written in place: a list of a million references is 32 MiB, and growing it (or
        # copying it into bytes) would hold it twice.
        out = bytearray(len(self) * ID_SIZE)
        at = 0
        record = self._record
        for group, starts in zip(self._groups, self._starts, strict=True):
            if not group:
                continue
            for bucket in range(_BUCKETS):
                lo, hi = starts[bucket] * record, starts[bucket + 1] * record
                if hi - lo == record:
                    out[at : at + ID_SIZE] = group[lo : lo + ID_SIZE]
                    at += ID_SIZE
                elif hi > lo:
                    ids = sorted(group[offset : offset + ID_SIZE] for offset in range(lo, hi, record))
                    for blob_id in ids:
                        out[at : at + ID_SIZE] = blob_id
                        at += ID_SIZE
        return out

    def _merge(self) -> None:
        """Move the pending ids into their groups, one group at a time."""
        if not self._pending:
            return
        pending = sorted(self._pending.items())
        self._pending = {}
        i, n = 0, len(pending)
        while i < n:
            first = pending[i][0][0]
            j = i
            while j < n and pending[j][0][0] == first:
                j += 1
            self._merge_group(first, pending[i:j])
            i = j
        self._merged += n

    def _merge_group(self, first: int, items: list[tuple[bytes, bytes]]) -> None:
        group, starts, record = self._groups[first], self._starts[first], self._record
        parts: list[bytes] = []
        new_starts = _empty_starts()
        count = k = 0
        for bucket in range(_BUCKETS):
            lo, hi = starts[bucket], starts[bucket + 1]
            if hi > lo:
                parts.append(group[lo * record : hi * record])
                count += hi - lo
            while k < len(items) and items[k][0][1] == bucket:
                parts.append(items[k][0])
                parts.append(items[k][1])
                k += 1
                count += 1
            new_starts[bucket + 1] = count
        self._groups[first] = b"".join(parts)
        self._starts[first] = new_starts


def IdSet(ids: Iterable[bytes] = ()) -> IdMap:
    """A set of 32-byte ids (an `IdMap` without values)."""
    return IdMap(0, ids)
