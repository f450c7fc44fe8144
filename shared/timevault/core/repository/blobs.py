"""Blob encoding: plaintext → (id, compressed, encrypted, padded payload) and back.

A stored blob is only ``nonce (12) ‖ AES-GCM ciphertext ‖ tag (16)``, encrypted with the
backup job's data key; the sealed data key is kept beside it (once per pack, in the pack's
encrypted header and in the index), so nothing repeats from blob to blob inside a pack. The
plaintext is ``encoding (1: 0 raw, 1 zstd) ‖ body length (u32 LE) ‖ body ‖ zero padding``,
sized so that the stored length is a Padmé length: the stored sizes say little about the
sizes of files. The blob type is the associated data. Compression runs before encryption;
data that does not shrink is stored raw.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import zstandard

from timevault.core import crypto
from timevault.core.buffers import BytesLike
from timevault.core.errors import CorruptBlob
from timevault.core.repository.format import BlobType

_RAW = 0
_ZSTD = 1
ZSTD_LEVEL = 1
# Below this ratio compression is not worth the decompression cost on restore.
_WORTHWHILE = 0.97
_HEADER = struct.Struct("<BI")
BLOB_OVERHEAD = crypto.AEAD_OVERHEAD + _HEADER.size

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    comp = getattr(_local, "compressor", None)
    if comp is None:
        comp = _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_local, "decompressor", None)
    if dec is None:
        dec = _local.decompressor = zstandard.ZstdDecompressor()
    return dec


@dataclass(frozen=True, slots=True)
class EncodedBlob:
    """A blob ready to be packed: its id, type, plaintext length, encrypted payload, and the
    sealed data key it is encrypted with."""

    id: bytes
    type: BlobType
    raw_length: int
    payload: BytesLike
    """A view when an uploader packs it straight from the received message."""
    sealed_key: bytes


def stored_length(body_length: int) -> int:
    """The stored (padded) length of a blob whose encoded body has `body_length` bytes."""
    return crypto.padme(BLOB_OVERHEAD + body_length)


def encode(
    session: crypto.SealingSession, blob_id: bytes, blob_type: BlobType, data: BytesLike
) -> EncodedBlob:
    """Compress (when it helps), pad and encrypt one blob. CPU-bound; releases the GIL in C."""
    return _seal(session, blob_id, blob_type, data, _compressor().compress(data))


def encode_many(
    session: crypto.SealingSession, batch: Sequence[tuple[bytes, BlobType, BytesLike]]
) -> list[EncodedBlob]:
    """`encode` for each blob of `batch`, compressing them all in one call.

    Many small files make many small blobs: compressed one by one, each gives up the GIL and
    waits to get it back for a few microseconds of work. One `multi_compress_to_buffer` call
    releases it once for the batch (same frames as `compress`).
    """
    if len(batch) < 2:
        return [encode(session, blob_id, blob_type, data) for blob_id, blob_type, data in batch]
    compressed = _compressor().multi_compress_to_buffer([data for _, _, data in batch])
    return [
        _seal(session, blob_id, blob_type, data, memoryview(compressed[i]))  # type: ignore[arg-type]
        for i, (blob_id, blob_type, data) in enumerate(batch)
    ]


def _seal(
    session: crypto.SealingSession, blob_id: bytes, blob_type: BlobType, data: BytesLike, compressed: BytesLike
) -> EncodedBlob:
    body: BytesLike
    if len(compressed) < len(data) * _WORTHWHILE:
        encoding, body = _ZSTD, compressed
    else:
        encoding, body = _RAW, data
    payload = bytearray(stored_length(len(body)))
    crypto.encrypt_padded_into(
        session.data_key, bytes((int(blob_type),)), _HEADER.pack(encoding, len(body)), body, memoryview(payload)
    )
    return EncodedBlob(blob_id, blob_type, len(data), payload, session.sealed)


def decode(
    unsealer: crypto.Unsealer,
    id_key: bytes,
    blob_id: bytes,
    blob_type: BlobType,
    payload: BytesLike,
    sealed_key: bytes,
) -> BytesLike:
    """Open, unpad, decompress and verify one blob against its id."""
    name = blob_id.hex()[:16]
    if len(payload) < BLOB_OVERHEAD:
        raise CorruptBlob(f"blob {name} is truncated")
    try:
        plaintext = unsealer.open(sealed_key, payload, bytes((int(blob_type),)))
    except crypto.Unauthenticated as exc:
        raise CorruptBlob(f"blob {name} failed authentication") from exc
    encoding, length = _HEADER.unpack_from(plaintext)
    if length > len(plaintext) - _HEADER.size:
        raise CorruptBlob(f"blob {name} claims a body longer than itself")
    body = memoryview(plaintext)[_HEADER.size : _HEADER.size + length]
    data: BytesLike
    if encoding == _ZSTD:
        try:
            data = _decompressor().decompress(body)
        except zstandard.ZstdError as exc:
            raise CorruptBlob(f"blob {name} does not decompress") from exc
    elif encoding == _RAW:
        data = body
    else:
        raise CorruptBlob(f"blob {name} has an unknown encoding {encoding}")
    if crypto.blob_id(id_key, data) != blob_id:
        raise CorruptBlob(f"blob {name} does not match its id")
    return data
