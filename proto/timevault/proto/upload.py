"""The chunk stream from a snapshotter to one uploader (MessagePack, raw bytes).

1. ``tv.upload.open`` (queue group ``uploader``, JSON `UploadOpen` → `UploadOpened`) picks one uploader.
2. ``tv.upload.session.<sid>.frames`` carries the blobs, as `BlobFrames` messages: a 4-byte
   big-endian length, the MessagePack `BlobFrames` head of that length, then each frame's bytes
   back to back in the head's order. A frame is a whole blob, or one part of a blob larger than
   a message (``part``/``parts``; the parts of a blob go in order, one after another, and the
   uploader joins them). Each message's reply is an `UploadAck`. A session's messages are
   handled in order, so a sender may keep a few on the wire. `frames_message` builds one (as a
   list of buffers, so the blobs' bytes are not copied), `read_frames` takes one apart (as views).
3. ``tv.upload.session.<sid>.flush`` (`UploadFlush`) writes every open pack and its index, records
   the chunks in the catalog, then acks with ``durable_seq`` = the last blob seq now durable.
   With ``partial`` (a sender's window is full) it waits for a pack already being written instead,
   when there is one.
4. ``tv.upload.session.<sid>.close`` (`UploadClose`) ends the session (``discard`` drops open packs).
5. ``tv.upload.session.<sid>.ping`` (`UploadFlush`, empty) answers at once: while a slow frames or
   flush request is outstanding, the sender pings to notice a dead uploader within seconds.

Redelivery is harmless: a blob id added twice is packed once, and packs are content addressed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import msgspec

from timevault.proto.errors import ServiceError


class UploadOpen(msgspec.Struct, kw_only=True):
    """Open an upload session for one backup job."""

    job_id: str
    """The backup job."""
    plan_id: str
    """Its plan (the uploader fetches location and write keys from the catalog)."""
    sealed_key: bytes = b""
    """The job's data key sealed to the repository's public key (92 bytes): every blob of the
    session is encrypted with it, and each pack's header carries it once (repository format 2)."""


class UploadOpened(msgspec.Struct, kw_only=True):
    """Reply to `UploadOpen`."""

    session_id: str
    """Use in ``tv.upload.session.<session_id>.*``."""
    uploader: str
    """Instance id of the uploader."""


class BlobFrame(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One encrypted blob, or one part of it, in a ``frames`` message; its bytes follow the head.

    A whole blob's head leaves out ``part`` and ``parts`` (they are encoded only for parts).
    """

    seq: int
    """Sequence number of the blob within the session, from 1."""
    id: bytes
    """Blob id (keyed hash of the plaintext)."""
    type: int
    """Blob type (0 data, 1 tree; see `timevault.core.repository.format.BlobType`)."""
    raw_length: int
    """Plaintext length."""
    size: int
    """Length of its encrypted bytes in the message (of this part, for a part)."""
    part: int = 0
    """Index of this part, from 0, for a blob sent in parts."""
    parts: int = 1
    """Number of parts the blob is sent in (1: the frame is the whole blob)."""


class BlobFrames(msgspec.Struct, kw_only=True):
    """Head of a ``frames`` message (MessagePack); the reply is one `UploadAck`."""

    blobs: list[BlobFrame]
    """Blobs (or parts) in seq order, in the order their bytes follow."""


_HEAD_LENGTH = struct.Struct(">I")
_frames_encoder = msgspec.msgpack.Encoder()
_frames_decoder = msgspec.msgpack.Decoder(BlobFrames)


def frames_message(head: BlobFrames, payloads: Sequence[bytes | bytearray | memoryview],
                   ) -> list[bytes | bytearray | memoryview]:
    """The buffers of a ``frames`` message, in order; the payloads are not copied."""
    encoded = _frames_encoder.encode(head)
    return [_HEAD_LENGTH.pack(len(encoded)) + encoded, *payloads]


def read_frames(data: bytes | bytearray | memoryview) -> list[tuple[BlobFrame, memoryview]]:
    """Each blob of a ``frames`` message with a view of its bytes; raises ServiceError(invalid)."""
    view = memoryview(data)
    if len(view) < _HEAD_LENGTH.size:
        raise ServiceError("invalid", "frames message too short")
    (head_length,) = _HEAD_LENGTH.unpack_from(view)
    offset = _HEAD_LENGTH.size + head_length
    try:
        head = _frames_decoder.decode(view[_HEAD_LENGTH.size : offset])
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ServiceError("invalid", f"bad frames head: {exc}") from exc
    blobs = []
    for blob in head.blobs:
        if blob.size < 0 or offset + blob.size > len(view):
            raise ServiceError("invalid", "frames message shorter than its head says")
        if blob.parts < 1 or not 0 <= blob.part < blob.parts:
            raise ServiceError("invalid", f"bad part numbers {blob.part}/{blob.parts} for blob {blob.seq}")
        blobs.append((blob, view[offset : offset + blob.size]))
        offset += blob.size
    if offset != len(view):
        raise ServiceError("invalid", "frames message longer than its head says")
    return blobs


class UploadFlush(msgspec.Struct, kw_only=True):
    """Make every blob sent so far durable."""

    partial: bool = False
    """Backpressure only: when packs are being written, just wait until one of them is durable
    (no small pack is sealed); seal and write the open packs only when none is. Uploaders that
    predate the field flush everything, which is also correct."""


class UploadClose(msgspec.Struct, kw_only=True):
    """End the session."""

    discard: bool = False
    """Drop blobs not yet written (job canceled)."""


class UploadAck(msgspec.Struct, kw_only=True):
    """Reply to every session request."""

    durable_seq: int = 0
    """Every blob with seq ≤ this is durably stored and recorded in the catalog."""
    error: str | None = None
    """Set when the uploader failed; the sender retries elsewhere or fails the job."""
