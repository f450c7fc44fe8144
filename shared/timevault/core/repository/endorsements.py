"""Endorsement objects: the password holder's signature over the history (see `history.py`).

``endorsements/<id>`` is AES-GCM (metadata key, aad ``endorsement``) of msgpack
`EndorsementFile` {body: msgpack `Endorsement`, signature: Ed25519 over a fixed prefix and the
body}, named by the BLAKE3 hash of the stored bytes. The metadata key only hides the snapshot
ids and times from storage; what makes an endorsement authentic is the signature, which only
the holder of the password can make and everyone with the write keys can check.
"""

from __future__ import annotations

import msgspec

from timevault.core import crypto
from timevault.core.repository.format import Endorsement, EndorsementFile, WriteKeys

_SIGNED = b"timevault endorsement v2\0"
_file_decoder = msgspec.msgpack.Decoder(EndorsementFile)
_body_decoder = msgspec.msgpack.Decoder(Endorsement)


def encode(keys: WriteKeys, sign_key: bytes, endorsement: Endorsement) -> tuple[str, bytes]:
    """(id, stored bytes) of a signed endorsement."""
    body = msgspec.msgpack.encode(endorsement)
    signed = EndorsementFile(body=body, signature=crypto.sign(sign_key, _SIGNED + body))
    data = crypto.encrypt(keys.meta_key, msgspec.msgpack.encode(signed), b"endorsement")
    return crypto.content_hash(data).hex(), data


def decode(keys: WriteKeys, endorsement_id: str, data: bytes) -> tuple[Endorsement | None, str]:
    """(the endorsement, "") when authentic, else (None, why not)."""
    where = f"endorsement {endorsement_id[:12]}"
    if crypto.content_hash(data).hex() != endorsement_id:
        return None, f"{where} does not match its name (renamed or changed)"
    try:
        signed = _file_decoder.decode(crypto.decrypt(keys.meta_key, data, b"endorsement"))
    except (crypto.Unauthenticated, msgspec.DecodeError):
        return None, f"{where} is damaged"
    if not crypto.verify_signature(keys.verify_key, _SIGNED + signed.body, signed.signature):
        return None, f"{where} is not signed by this repository's password holder (forged or damaged)"
    try:
        endorsement = _body_decoder.decode(signed.body)
    except msgspec.DecodeError:
        return None, f"{where} is damaged"
    if endorsement.repo_id != keys.repo_id:
        return None, f"{where} belongs to another repository"
    return endorsement, ""
