"""The chunk stream from a snapshotter to one uploader (MessagePack, raw bytes).

1. ``tv.upload.open`` (queue group ``uploader``, JSON `UploadOpen` → `UploadOpened`) picks one uploader.
2. ``tv.upload.session.<sid>.blob`` carries `BlobPart` requests; each reply is an `UploadAck`.
   A blob larger than the connection's max payload is split into parts (``part``/``parts``),
   the uploader reassembles; only the last part's ack covers the blob.
3. ``tv.upload.session.<sid>.flush`` (`UploadFlush`) writes every open pack and its index, records
   the chunks in the catalog, then acks with ``durable_seq`` = the last blob seq now durable.
   With ``partial`` (a sender's window is full) it waits for a pack already being written instead,
   when there is one.
4. ``tv.upload.session.<sid>.close`` (`UploadClose`) ends the session (``discard`` drops open packs).
5. ``tv.upload.session.<sid>.blobs`` carries a `BlobBatch`: several whole small blobs in one
   request (one round trip and one reply instead of one per blob), when the uploader said
   ``batch=true`` in `UploadOpened`. A session's batches are handled in order, so a sender may
   keep a few on the wire; before a ``blob`` (another subscription) it waits for their replies.
6. ``tv.upload.session.<sid>.ping`` (`UploadFlush`, empty) answers at once: while a slow blob or
   flush request is outstanding, the sender pings to notice a dead uploader within seconds.

Redelivery is harmless: a blob id added twice is packed once, and packs are content addressed.
"""

from __future__ import annotations

import msgspec


class UploadOpen(msgspec.Struct, kw_only=True):
    """Open an upload session for one backup job."""

    job_id: str
    """The backup job."""
    plan_id: str
    """Its plan (the uploader fetches location and write keys from the catalog)."""


class UploadOpened(msgspec.Struct, kw_only=True):
    """Reply to `UploadOpen`."""

    session_id: str
    """Use in ``tv.upload.session.<session_id>.*``."""
    uploader: str
    """Instance id of the uploader."""
    batch: bool = False
    """The uploader accepts `BlobBatch` on ``blobs`` (older uploaders do not; senders then send one by one)."""


class BlobPart(msgspec.Struct, kw_only=True):
    """One encrypted blob, or one part of it (MessagePack)."""

    seq: int
    """Sequence number of the blob within the session, from 1."""
    id: bytes
    """Blob id (keyed hash of the plaintext)."""
    type: int
    """Blob type (0 data, 1 tree; see `shared.repository.format.BlobType`)."""
    raw_length: int
    """Plaintext length."""
    data: bytes
    """Encrypted payload, or this part of it."""
    part: int = 0
    """Index of this part."""
    parts: int = 1
    """Number of parts."""


class BlobBatch(msgspec.Struct, kw_only=True):
    """Several whole blobs in one request (MessagePack); the reply is one `UploadAck`."""

    blobs: list[BlobPart]
    """Blobs in seq order, each with ``parts == 1``."""


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
