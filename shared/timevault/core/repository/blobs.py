"""Blob encoding: plaintext → (id, compressed, sealed payload) and back.

An encoded blob's payload is self-contained:
sealed job key (92) ‖ encoding (1: 0 raw, 1 zstd) ‖ nonce (12) ‖ AES-GCM ciphertext ‖ tag (16),
with the blob type and the encoding byte as associated data. Compression runs before
encryption; data that does not shrink is stored raw.
"""

from __future__ import annotations

import threading
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
    """A blob ready to be packed: its id, type, plaintext length and encrypted payload."""

    id: bytes
    type: BlobType
    raw_length: int
    payload: bytes | bytearray | memoryview
    """A view when an uploader packs it straight from the received message."""


def _aad(blob_type: BlobType, encoding: int) -> bytes:
    return bytes((int(blob_type), encoding))


def encode(
    session: crypto.SealingSession, blob_id: bytes, blob_type: BlobType, data: BytesLike
) -> EncodedBlob:
    """Compress (when it helps) and seal one blob. CPU-bound; releases the GIL in C."""
    compressed = _compressor().compress(data)
    plaintext: BytesLike
    if len(compressed) < len(data) * _WORTHWHILE:
        encoding, plaintext = _ZSTD, compressed
    else:
        encoding, plaintext = _RAW, data
    payload = session.seal(plaintext, _aad(blob_type, encoding), bytes((encoding,)))
    return EncodedBlob(blob_id, blob_type, len(data), payload)


def decode(
    unsealer: crypto.Unsealer, id_key: bytes, blob_id: bytes, blob_type: BlobType, payload: BytesLike
) -> bytes:
    """Open, decompress and verify one blob against its id."""
    if len(payload) <= crypto.SEALED_KEY_SIZE:
        raise CorruptBlob(f"blob {blob_id.hex()[:16]} is truncated")
    encoding = payload[crypto.SEALED_KEY_SIZE]
    try:
        plaintext = unsealer.open(payload, _aad(blob_type, encoding), header_size=1)
    except crypto.Unauthenticated as exc:
        raise CorruptBlob(f"blob {blob_id.hex()[:16]} failed authentication") from exc
    if encoding == _ZSTD:
        try:
            data = _decompressor().decompress(plaintext)
        except zstandard.ZstdError as exc:
            raise CorruptBlob(f"blob {blob_id.hex()[:16]} does not decompress") from exc
    elif encoding == _RAW:
        data = plaintext
    else:
        raise CorruptBlob(f"blob {blob_id.hex()[:16]} has an unknown encoding {encoding}")
    if crypto.blob_id(id_key, data) != blob_id:
        raise CorruptBlob(f"blob {blob_id.hex()[:16]} does not match its id")
    return data
