"""The on-storage data structures of a repository (format version 1).

`docs/repository-format.md` describes the byte layout around these; this module is the
single definition of their fields. Plaintext objects are JSON, encrypted ones msgpack.
Fields are only ever added at the end with defaults, so older readers skip new ones.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec

FORMAT_VERSION = 1
PACK_MAGIC = b"TVP1"


class BlobType(IntEnum):
    DATA = 0
    TREE = 1


class ChunkerConfig(msgspec.Struct):
    """Chunk size bounds; the gear-table seed is secret and lives in the keys."""

    min_size: int
    avg_size: int
    max_size: int


class Config(msgspec.Struct):
    """`config`: plaintext, the first object a reader opens."""

    version: int
    id: str
    chunker: ChunkerConfig
    created: str
    compression: str = "zstd"
    cipher: str = "aes-256-gcm"
    id_hash: str = "blake3-keyed"
    seal: str = "x25519-hkdf-sha256"


class KdfParams(msgspec.Struct):
    """scrypt cost parameters and salt for one key file."""

    name: str
    n: int
    r: int
    p: int
    salt: bytes


class KeyFile(msgspec.Struct):
    """`keys/<id>`: plaintext JSON wrapper around the password-encrypted `MasterKeys`."""

    version: int
    kdf: KdfParams
    created: str
    data: bytes


class WriteKeys(msgspec.Struct):
    """What a machine needs to add backups without being able to read old ones."""

    repo_id: str
    public_key: bytes
    id_key: bytes
    meta_key: bytes
    chunker_seed: int


class MasterKeys(msgspec.Struct):
    """Every secret of a repository; stored only inside a `KeyFile`."""

    write: WriteKeys
    private_key: bytes


class PackBlob(msgspec.Struct, array_like=True):
    """Where one blob lies in a pack. `length` is the stored (encrypted) size."""

    id: bytes
    type: BlobType
    offset: int
    length: int
    raw_length: int


class PackHeader(msgspec.Struct):
    """The encrypted trailer of a pack, listing its blobs (to rebuild a lost index)."""

    blobs: list[PackBlob]


class IndexPack(msgspec.Struct):
    id: str
    size: int
    blobs: list[PackBlob]


class IndexFile(msgspec.Struct):
    """`index/<id>`: blob → pack locations for a set of packs; may supersede older index files."""

    packs: list[IndexPack]
    supersedes: list[str] = []


class Node(msgspec.Struct, omit_defaults=True):
    """One entry of a directory. Names are raw bytes: file names need not be UTF-8."""

    name: bytes
    type: str  # "file" | "dir" | "symlink"
    mode: int
    mtime_ns: int
    size: int = 0
    content: list[bytes] = []
    subtree: bytes | None = None
    target: bytes | None = None
    inode: int = 0
    device: int = 0
    uid: int = 0
    gid: int = 0
    changed_while_reading: bool = False


class Tree(msgspec.Struct):
    """A directory: its entries sorted by name. Stored as a TREE blob."""

    nodes: list[Node]


class SnapshotStats(msgspec.Struct):
    files: int = 0
    dirs: int = 0
    size: int = 0
    added_size: int = 0
    added_blobs: int = 0
    unchanged_files: int = 0


class Snapshot(msgspec.Struct):
    """`snapshots/<id>`: one point in time. Readable with the write tier (no file contents)."""

    time: str
    finished: str
    hostname: str
    paths: list[str]
    tree: bytes
    stats: SnapshotStats
    parent: str | None = None
    warnings: list[str] = []
    tags: list[str] = []
    plan: str | None = None


class Lock(msgspec.Struct):
    """`locks/<id>`: held by backups (shared) and prune (exclusive) while they run."""

    exclusive: bool
    hostname: str
    pid: int
    time: float
    expires: float
