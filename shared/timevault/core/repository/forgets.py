"""`forgets/<id>` objects: which snapshots the write tier removed, and why.

The services forget snapshots by their retention rules without the password, so they cannot
sign anything. What they can do is say so with the metadata key, which storage does not have:
before deleting snapshots they write a `ForgetRecord` naming them. An endorsed snapshot that is
gone *with* a record was forgotten by a holder of the write keys (a note); one gone *without*
a record was deleted by someone who has no keys at all (storage, or a person with a file
manager) and `check` reports it as an error. A holder of the write keys (a compromised server)
can write records too: for it, a forget is exactly as possible as it always was (it can delete
objects), and a record proves nothing about intent; docs/security.md says so.

The next endorsement no longer lists the forgotten snapshots, and removes the records it
covers. Records are named by the BLAKE3 hash of their stored bytes, like the other objects.
"""

from __future__ import annotations

import msgspec

from timevault.core import crypto
from timevault.core.errors import RepositoryError
from timevault.core.repository.format import ForgetRecord

_decoder = msgspec.msgpack.Decoder(ForgetRecord)


def encode(meta_key: bytes, record: ForgetRecord) -> tuple[str, bytes]:
    """(id, stored bytes) of a forget record."""
    data = crypto.encrypt(meta_key, msgspec.msgpack.encode(record), b"forget")
    return crypto.content_hash(data).hex(), data


def decode(meta_key: bytes, record_id: str, data: bytes) -> ForgetRecord:
    where = f"forget record {record_id[:12]}"
    if crypto.content_hash(data).hex() != record_id:
        raise RepositoryError(f"{where} does not match its name (renamed or changed)")
    try:
        return _decoder.decode(crypto.decrypt(meta_key, data, b"forget"))
    except (crypto.Unauthenticated, msgspec.DecodeError) as exc:
        raise RepositoryError(f"{where} is damaged") from exc
