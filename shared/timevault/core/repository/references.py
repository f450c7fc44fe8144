"""`references/<id>` objects: which blobs a snapshot needs, readable by the write tier.

The services cannot read trees (that needs the password), yet must know what each snapshot
references to forget snapshots and prune by themselves. So each backup also writes the set of
blob ids it needs (data and trees), encrypted with the metadata key, as sorted 32-byte ids
back to back; often as a delta against a full list of its parent (see `References`). The
snapshot names the object, and its own keyed-hash name covers that field. The password holder
can always recompute the set from the trees, and `check` compares the two.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator

import msgspec

from timevault.core import crypto
from timevault.core.errors import NotAReferencesList, RepositoryError
from timevault.core.repository.compact import IdMap
from timevault.core.repository.format import References

ID_SIZE = 32
_decoder = msgspec.msgpack.Decoder(References)


def pack_ids(ids: set[bytes]) -> bytes:
    return b"".join(sorted(ids))


def small_delta(ids: IdMap, base: bytes) -> tuple[bytes, bytes] | None:
    """(added, removed) as sorted packed ids when `ids` differs from the full list `base` by
    at most a quarter of `base`'s length; else None (store a full list).

    `base` is searched where it lies (it is sorted): no set of a million ids is built.
    """
    if len(base) % ID_SIZE:
        return None
    limit = len(base) // ID_SIZE // 4
    try:
        in_base = SortedIds(base)
    except ValueError:
        return None
    added: list[bytes] = []
    for blob_id in ids:
        if blob_id not in in_base:
            added.append(blob_id)
            if len(added) > limit:
                return None
    removed: list[bytes] = []
    for offset in range(0, len(base), ID_SIZE):
        blob_id = base[offset : offset + ID_SIZE]
        if blob_id not in ids:
            removed.append(blob_id)
            if len(added) + len(removed) > limit:
                return None
    return b"".join(sorted(added)), b"".join(sorted(set(removed)))


class SortedIds:
    """Membership in sorted 32-byte ids back to back, searched in place: a table of where each
    two-byte prefix starts (built in one pass), then `bytes.find` within that bucket."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        starts = array("I", bytes(4 * 65537))
        previous = 0
        for offset in range(0, len(data), ID_SIZE):
            bucket = data[offset] << 8 | data[offset + 1]
            if bucket < previous:
                raise ValueError("ids are not sorted")
            previous = bucket
            starts[bucket + 1] += 1
        for bucket in range(65536):
            starts[bucket + 1] += starts[bucket]
        self._starts = starts

    def __contains__(self, blob_id: bytes) -> bool:
        if len(blob_id) != ID_SIZE:
            return False
        bucket = blob_id[0] << 8 | blob_id[1]
        lo, hi = self._starts[bucket] * ID_SIZE, self._starts[bucket + 1] * ID_SIZE
        pos = self._data.find(blob_id, lo, hi)
        while pos >= 0 and (pos - lo) % ID_SIZE:
            pos = self._data.find(blob_id, pos + 1, hi)
        return pos >= 0


class SortedPieces:
    """Splits the pieces of a list of references (ids back to back) into ids, noting whether
    they come in order across pieces (a repeat is let through, as `IdMap.add_sorted` does)."""

    def __init__(self) -> None:
        self._previous = b""
        self.unsorted = False

    def split(self, piece: bytes) -> list[bytes]:
        ids = [piece[i : i + ID_SIZE] for i in range(0, len(piece), ID_SIZE)]
        if ids and not self.unsorted:
            # Sorting what is sorted is one pass in C (and sorting is stable: repeats compare equal).
            if ids[0] < self._previous or ids != sorted(ids):
                self.unsorted = True
            self._previous = ids[-1]
        return ids


def unpack_ids(data: bytes) -> set[bytes]:
    if len(data) % ID_SIZE:
        raise RepositoryError("a list of references is damaged (not whole ids)")
    return {data[i : i + ID_SIZE] for i in range(0, len(data), ID_SIZE)}


def decode(meta_key: bytes, references_id: str, data: bytes) -> References:
    where = f"the list of references {references_id[:12]}"
    if crypto.content_hash(data).hex() != references_id:
        raise RepositoryError(f"{where} does not match its name (renamed or changed)")
    try:
        record = _decoder.decode(crypto.decrypt(meta_key, data, b"references"))
    except (crypto.Unauthenticated, msgspec.DecodeError) as exc:
        raise RepositoryError(f"{where} is damaged") from exc
    if len(record.added) % ID_SIZE or len(record.removed) % ID_SIZE:
        raise RepositoryError(f"{where} is damaged (not whole ids)")
    return record


# --- streamed: a list of a million references is never held whole -------------------------

_FULL_PREFIX = b"\x83\xa4base\xc0\xa5added"
_FULL_SUFFIX = b"\xa7removed\xc4\x00"


def _bin_header(length: int) -> bytes:
    if length < 1 << 8:
        return b"\xc4" + length.to_bytes(1, "big")
    if length < 1 << 16:
        return b"\xc5" + length.to_bytes(2, "big")
    return b"\xc6" + length.to_bytes(4, "big")


def full_list_frame(count: int) -> tuple[bytes, bytes]:
    """(prefix, suffix) around `count` sorted ids: together exactly the msgpack of
    `References(added=ids)` as msgspec encodes it, so a full list can be encrypted as it is
    read from disk."""
    return _FULL_PREFIX + _bin_header(count * ID_SIZE), _FULL_SUFFIX


NotAList = NotAReferencesList


class ReferencesParser:
    """Parses the msgpack map of a `References` fed in pieces, as it is decrypted: the ids of
    `added` go to `on_added` (whole ids, in pieces); the other fields (small) are kept in
    `fields`. Nothing it sees is authenticated until the decryption finishes: callers only
    use the result once it did."""

    _SMALL = 4096  # `base` is a hex id; `removed` is only kept when this small

    def __init__(
        self, on_added: Callable[[bytes], None] | None, on_length: Callable[[int], None] | None = None
    ) -> None:
        self._on_added = on_added
        self._on_length = on_length  # told the length of `added` before its first id
        self._buffer = bytearray()
        self._entries: int | None = None  # map entries still to read; None: the header not yet
        self._key: str | None = None
        self._left = 0  # bytes of the current value still to come
        self._value: bytearray | None = None  # the current small value, or None when skipped
        self.fields: dict[str, bytes | str | None] = {}
        self.added_length: int | None = None

    def feed(self, piece: bytes) -> None:
        self._buffer += piece
        while self._step():
            pass

    def finish(self) -> dict[str, bytes | str | None]:
        if self._entries != 0 or self._key is not None or self._buffer:
            raise NotAList("a list of references ends early or has trailing bytes")
        return self.fields

    def _length(self, first: int, sizes: dict[int, int]) -> int | None:
        """The length after a str8/16/32 or bin8/16/32 marker (None: more bytes needed)."""
        width = sizes[first]
        if len(self._buffer) < 1 + width:
            return None
        length = int.from_bytes(self._buffer[1 : 1 + width], "big")
        del self._buffer[: 1 + width]
        return length

    def _step(self) -> bool:
        buffer = self._buffer
        if self._entries is None:
            if not buffer:
                return False
            first = buffer[0]
            if 0x80 <= first <= 0x8F:
                del buffer[:1]
                self._entries = first & 0x0F
                return True
            if first in (0xDE, 0xDF):
                entries = self._length(first, {0xDE: 2, 0xDF: 4})
                if entries is None:
                    return False
                self._entries = entries
                return True
            raise NotAList("a list of references is not a map")
        if self._key is None:
            if self._entries == 0 or not buffer:
                if self._entries == 0 and buffer:
                    raise NotAList("trailing bytes after a list of references")
                return False
            first = buffer[0]
            if 0xA0 <= first <= 0xBF:
                width, length = 0, first & 0x1F
            elif first in (0xD9, 0xDA, 0xDB):
                width = {0xD9: 1, 0xDA: 2, 0xDB: 4}[first]
                if len(buffer) < 1 + width:
                    return False
                length = int.from_bytes(buffer[1 : 1 + width], "big")
            else:
                raise NotAList("a key of a list of references is not a string")
            if length > self._SMALL:
                raise NotAList("a key of a list of references is too long")
            if len(buffer) < 1 + width + length:
                return False  # nothing consumed until the whole key is here
            key = bytes(buffer[1 + width : 1 + width + length])
            del buffer[: 1 + width + length]
            self._key = key.decode("utf-8", "replace")
            self._left = -1
            return True
        if self._left == -1:  # the value's header
            if not buffer:
                return False
            first = buffer[0]
            if first == 0xC0:
                del buffer[:1]
                self._done(None)
                return True
            if 0xA0 <= first <= 0xBF:
                del buffer[:1]
                self._start(first & 0x1F, text=True)
                return True
            if first in (0xD9, 0xDA, 0xDB, 0xC4, 0xC5, 0xC6):
                value_length = self._length(first, {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4})
                if value_length is None:
                    return False
                self._start(value_length, text=first in (0xD9, 0xDA, 0xDB))
                return True
            raise NotAList("a field of a list of references is neither bytes, a string nor nil")
        # The value's body.
        if self._key == "added" and self._on_added is not None:
            whole = min(self._left, len(buffer)) // ID_SIZE * ID_SIZE
            if self._left < ID_SIZE and self._left:
                raise NotAList("a list of references is damaged (not whole ids)")
            if whole == 0:
                if self._left == 0:
                    self._done(b"")
                    return True
                return False
            self._on_added(bytes(buffer[:whole]))
            del buffer[:whole]
            self._left -= whole
            if self._left == 0:
                self._done(b"")
            return True
        step = min(self._left, len(buffer))
        if step == 0 and self._left:
            return False
        if self._value is not None:
            self._value += buffer[:step]
        del buffer[:step]
        self._left -= step
        if self._left == 0:
            self._done(bytes(self._value) if self._value is not None else b"")
        return True

    def _start(self, length: int, *, text: bool) -> None:
        self._left = length
        self._text = text
        if self._key == "added":
            self.added_length = length
            if self._on_added is not None and length % ID_SIZE:
                raise NotAList("a list of references is damaged (not whole ids)")
            if self._on_length is not None:
                self._on_length(length)
        keep = length <= self._SMALL and not (self._key == "added" and self._on_added is not None)
        self._value = bytearray() if keep else None
        if length == 0:
            self._done(b"")

    def _done(self, value: bytes | None) -> None:
        assert self._key is not None and self._entries is not None
        if value is not None and getattr(self, "_text", False):
            self.fields[self._key] = value.decode("utf-8", "replace")
        else:
            self.fields[self._key] = value
        self._text = False
        self._key = None
        self._value = None
        self._left = 0
        self._entries -= 1


class DeltaMerge:
    """(added, removed) between our sorted unique ids and a full list `base` streamed past,
    both sorted: one pass over each, giving up as soon as the difference passes a quarter of
    the base (as `small_delta`). Equal stretches, the common case, are compared in C."""

    def __init__(self, ours: Iterator[bytes], base_count: int) -> None:
        self._ours = ours  # blocks of sorted unique ids back to back
        self._block = b""
        self._pos = 0
        self._previous = b""
        self.limit = base_count // 4
        self.added: list[bytes] = []
        self.removed: list[bytes] = []
        self.too_large = False

    def _current(self) -> bytes | None:
        while self._pos >= len(self._block):
            block = next(self._ours, None)
            if block is None:
                return None
            self._block, self._pos = block, 0
        return self._block[self._pos : self._pos + ID_SIZE]

    def _equal_run(self, base: bytes, at: int) -> int:
        """How many ids from base[at] equal ours from the current position (bytes compared).

        Galloping (1, 2, 4, … ids, then halving between the last two): each comparison copies
        its slices, so the bytes compared stay within a few times the run's own length. Halving
        over the whole block copied up to a block per probe at every difference: at 1 % of a
        million files changed, a fifth of an incremental backup's time.
        """
        block, pos = self._block, self._pos
        most = min(len(base) - at, len(block) - pos) // ID_SIZE
        lo, step = 0, 1  # ids [0, lo) are known equal
        while lo < most:
            n = min(lo + step, most)
            if base[at + lo * ID_SIZE : at + n * ID_SIZE] != block[pos + lo * ID_SIZE : pos + n * ID_SIZE]:
                hi = n - 1  # the difference lies in ids [lo, n)
                break
            lo, step = n, step * 2
        else:
            return most
        while lo < hi:  # the longest equal prefix within [lo, hi], by halving
            mid = (lo + hi + 1) // 2
            if base[at + lo * ID_SIZE : at + mid * ID_SIZE] == block[pos + lo * ID_SIZE : pos + mid * ID_SIZE]:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def feed(self, base: bytes) -> None:
        """The next whole ids of the base list."""
        at = 0
        while at < len(base) and not self.too_large:
            mine = self._current()
            if mine is not None:
                equal = self._equal_run(base, at)
                if equal and base[at : at + ID_SIZE] > self._previous:
                    at += equal * ID_SIZE
                    self._pos += equal * ID_SIZE
                    self._previous = base[at - ID_SIZE : at]
                    continue
            blob_id = base[at : at + ID_SIZE]
            at += ID_SIZE
            if blob_id <= self._previous:
                if blob_id == self._previous:
                    continue  # a duplicate in the base
                raise NotAList("a list of references is not sorted")
            self._previous = blob_id
            while mine is not None and mine < blob_id and not self.too_large:
                self.added.append(mine)
                self._pos += ID_SIZE
                self._check()
                mine = self._current()
            if mine == blob_id:
                self._pos += ID_SIZE
            else:
                self.removed.append(blob_id)
            self._check()

    def _check(self) -> None:
        if len(self.added) > self.limit or len(self.added) + len(self.removed) > self.limit:
            self.too_large = True

    def finish(self) -> tuple[bytes, bytes] | None:
        """(added, removed) as sorted ids back to back, or None when too large."""
        while not self.too_large:
            mine = self._current()
            if mine is None:
                break
            self.added.append(mine)
            self._pos += ID_SIZE
            self._check()
        if self.too_large:
            return None
        return b"".join(self.added), b"".join(self.removed)
