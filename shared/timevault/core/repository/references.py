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

import msgspec

from timevault.core import crypto
from timevault.core.errors import RepositoryError
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
