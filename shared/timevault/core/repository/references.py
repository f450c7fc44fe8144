"""`references/<id>` objects: which blobs a snapshot needs, readable by the write tier.

The services cannot read trees (that needs the password), yet must know what each snapshot
references to forget snapshots and prune by themselves. So each backup also writes the set of
blob ids it needs (data and trees), encrypted with the metadata key, as sorted 32-byte ids
back to back; often as a delta against a full list of its parent (see `References`). The
snapshot names the object, and its own keyed-hash name covers that field. The password holder
can always recompute the set from the trees, and `check` compares the two.
"""

from __future__ import annotations

import msgspec

from timevault.core import crypto
from timevault.core.errors import RepositoryError
from timevault.core.repository.format import References

ID_SIZE = 32
_decoder = msgspec.msgpack.Decoder(References)


def pack_ids(ids: set[bytes]) -> bytes:
    return b"".join(sorted(ids))


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
