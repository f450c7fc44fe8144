"""The index: which pack holds each blob, merged from every `index/<id>` file.

Index files are named by the BLAKE3 hash of their bytes, and a reader checks the name: a file
copied under another name (to escape a `supersedes` list, say) is refused as damaged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec

from timevault.core import crypto
from timevault.core.errors import CorruptIndex
from timevault.core.repository.format import BlobType, IndexFile, IndexPack, PackBlob
from timevault.core.storage import Storage
from timevault.core.storage.base import ObjectNotFound
from timevault.core.storage.once import put_once

# A listing can go stale once per concurrent compaction; more than a few in a row is no race.
LOAD_ATTEMPTS = 4
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(IndexFile)


@dataclass(frozen=True, slots=True)
class BlobLocation:
    pack: str
    type: BlobType
    offset: int
    length: int
    raw_length: int
    sealed_key: bytes  # the data key the blob is encrypted with (shared with its pack's entry)


def pack_object_name(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


class Index:
    """In-memory blob → location map. Built by `load`, grown as packs are written."""

    def __init__(self) -> None:
        self.blobs: dict[bytes, BlobLocation] = {}
        self.packs: dict[str, IndexPack] = {}
        self.files: set[str] = set()
        self.damaged_files: set[str] = set()  # ids of index files that did not load

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self.blobs

    def add_pack(self, pack: IndexPack) -> None:
        self.packs[pack.id] = pack
        blobs, pack_id, keys = self.blobs, pack.id, pack.keys
        for blob in pack.blobs:
            if blob.id not in blobs:  # the first pack named keeps the blob
                # A key number out of range leaves an empty key: the blob then fails to open.
                sealed = keys[blob.key] if 0 <= blob.key < len(keys) else b""
                blobs[blob.id] = BlobLocation(
                    pack_id, blob.type, blob.offset, blob.length, blob.raw_length, sealed
                )

    def stored_size(self) -> int:
        return sum(pack.size for pack in self.packs.values())

    @classmethod
    async def load(cls, storage: Storage, meta_key: bytes, errors: list[str] | None = None) -> Index:
        """Merge every index file. Damaged files raise CorruptIndex, or go to `errors` if given.

        A prune may compact the index while this reads it: it writes the file that supersedes the
        old ones before it deletes them, so a listed file that is gone when fetched means "list
        again"; the new listing holds its replacement."""
        for attempt in range(1, LOAD_ATTEMPTS + 1):
            try:
                return await cls._load_listed(storage, meta_key, errors)
            except ObjectNotFound:
                if attempt == LOAD_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    async def _load_listed(cls, storage: Storage, meta_key: bytes, errors: list[str] | None) -> Index:
        names = [info.name async for info in storage.list("index/")]
        sem = asyncio.Semaphore(16)
        damaged: set[str] = set()
        notes: list[str] = []  # given to `errors` only when this listing loads to the end

        async def fetch(name: str) -> tuple[str, IndexFile | None]:
            async with sem:
                try:
                    data = await storage.get(name)
                    if crypto.content_hash(data).hex() != name.removeprefix("index/"):
                        raise CorruptIndex("index file does not match its name (renamed or changed)")
                    return name, decode_index_file(meta_key, data)
                except CorruptIndex as exc:
                    if errors is None:
                        raise CorruptIndex(f"{storage.location}: {name}: {exc}") from exc
                    notes.append(f"{name}: {exc}")
                    damaged.add(name.removeprefix("index/"))
                    return name, None

        index = cls()
        index.damaged_files = damaged
        superseded: set[str] = set()
        loaded = []
        fetched = await asyncio.gather(*(fetch(name) for name in names))
        if errors is not None:
            errors.extend(notes)
        for name, file in fetched:
            if file is None:
                continue
            loaded.append((name, file))
            superseded.update(file.supersedes)
        for name, file in loaded:
            file_id = name.removeprefix("index/")
            if file_id in superseded:
                continue
            index.files.add(file_id)
            for pack in file.packs:
                index.add_pack(pack)
        return index


def decode_index_file(meta_key: bytes, data: bytes) -> IndexFile:
    try:
        return _decoder.decode(crypto.decrypt(meta_key, data, b"index"))
    except (crypto.Unauthenticated, msgspec.DecodeError) as exc:
        raise CorruptIndex(f"index file is damaged: {exc}") from exc


def encode_index_file(
    meta_key: bytes, packs: list[IndexPack], supersedes: list[str] | None = None, *, compacted: bool = False
) -> tuple[str, bytes]:
    """(id, stored bytes) of an index file: its id is the hash of its ciphertext."""
    plaintext = _encoder.encode(IndexFile(packs=packs, supersedes=supersedes or [], compacted=compacted))
    data = crypto.encrypt(meta_key, plaintext, b"index")
    return crypto.content_hash(data).hex(), data


async def write_index_file(
    storage: Storage, meta_key: bytes, packs: list[IndexPack], supersedes: list[str] | None = None,
    *, compacted: bool = False,
) -> str:
    """Write one index file and return its id (a hash of its ciphertext)."""
    file_id, data = encode_index_file(meta_key, packs, supersedes, compacted=compacted)
    await put_once(storage, f"index/{file_id}", data)
    return file_id


__all__ = [
    "BlobLocation",
    "CorruptIndex",
    "Index",
    "PackBlob",
    "decode_index_file",
    "encode_index_file",
    "pack_object_name",
    "write_index_file",
]
