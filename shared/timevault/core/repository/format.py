"""The on-storage data structures of a repository (format version 2).

`docs/repository-format.md` describes the byte layout around these; this module is the
single definition of their fields. Plaintext objects are JSON, encrypted ones msgpack.
Fields are only ever added at the end with defaults, so older readers skip new ones.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec

FORMAT_VERSION = 2
KEY_FILE_VERSION = 2
PACK_MAGIC = b"TVP2"


class BlobType(IntEnum):
    DATA = 0
    TREE = 1


class ChunkerConfig(msgspec.Struct):
    """Chunk size bounds; the gear-table seed is secret and lives in the keys."""

    min_size: int
    avg_size: int
    max_size: int


class ConfigVersion(msgspec.Struct):
    """The one field every format's `config` has: read first, to refuse other formats clearly."""

    version: int


class Config(msgspec.Struct):
    """The repository's parameters: the signed body of `config`.

    Every algorithm is named, so a reader refuses what it does not implement instead of
    misreading it; `timevault.core.repository.config` bounds-checks every number.
    """

    version: int
    id: str
    chunker: ChunkerConfig
    created: str
    compression: str = "zstd"
    cipher: str = "aes-256-gcm"
    id_hash: str = "blake3-keyed"
    seal: str = "x25519-hkdf-sha256"
    kdf: str = "argon2id"
    padding: str = "padme"
    signature: str = "ed25519"


class ConfigFile(msgspec.Struct):
    """`config`: plaintext JSON; `body` is msgpack `Config`, signed by the password holder."""

    version: int
    id: str
    body: bytes
    signature: bytes


class KdfParams(msgspec.Struct):
    """argon2id cost parameters and salt for one key file."""

    name: str
    time_cost: int
    memory_kib: int
    parallelism: int
    salt: bytes


class KeyFile(msgspec.Struct):
    """`keys/<id>`: plaintext JSON wrapper around the password-encrypted `MasterKeys`."""

    version: int
    kdf: KdfParams
    created: str
    data: bytes


class WriteKeys(msgspec.Struct):
    """What a machine needs to add backups without being able to read old ones.

    `verify_key` checks what the password holder signed (config, endorsements); it cannot sign.
    """

    repo_id: str
    public_key: bytes
    id_key: bytes
    meta_key: bytes
    chunker_seed: int
    verify_key: bytes


class MasterKeys(msgspec.Struct):
    """Every secret of a repository; stored only inside a `KeyFile`."""

    write: WriteKeys
    private_key: bytes
    sign_key: bytes


class PackBlob(msgspec.Struct, array_like=True):
    """Where one blob lies in a pack. `length` is the stored (encrypted, padded) size;
    `key` indexes the pack's list of sealed data keys (the one the blob is encrypted with)."""

    id: bytes
    type: BlobType
    offset: int
    length: int
    raw_length: int
    key: int = 0


class PackHeader(msgspec.Struct):
    """The encrypted trailer of a pack: the sealed data keys its blobs use, and its blobs
    (so a lost index can be rebuilt from packs alone)."""

    keys: list[bytes]
    blobs: list[PackBlob]


class IndexPack(msgspec.Struct):
    id: str
    size: int
    blobs: list[PackBlob]
    keys: list[bytes] = []


class IndexFile(msgspec.Struct):
    """`index/<id>`: blob → pack locations for a set of packs; may supersede older index files.

    `compacted` marks the files prune writes (every pack they list was known when it ran), as
    opposed to the one file per pack a backup writes."""

    packs: list[IndexPack]
    supersedes: list[str] = []
    compacted: bool = False


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
    """`snapshots/<id>`: one point in time. Readable with the write tier (no file contents,
    no names below the sources). Its id is a keyed hash of its plaintext.

    `parent` is the snapshot whose files this one compared against (incremental backups);
    `previous` the newest snapshot of the repository when this one was saved and `endorsement`
    the newest endorsement then (the history chain); `references` names the object listing
    every blob it needs. `warnings` counts the warnings, whose texts (they name paths) are in
    `sealed_warnings`, readable only with the password.
    """

    time: str
    finished: str
    hostname: str
    paths: list[str]
    tree: bytes
    stats: SnapshotStats
    parent: str | None = None
    previous: str | None = None
    endorsement: str | None = None
    references: str = ""
    warnings: int = 0
    sealed_warnings: bytes = b""
    tags: list[str] = []
    plan: str | None = None


class References(msgspec.Struct):
    """`references/<id>`: the blob ids (32 bytes each, sorted, concatenated) a snapshot needs.

    Readable by the write tier, so the services can prune without the password. A delta
    (`base` set) holds the ids added to and removed from the full list `base` names; a full
    list has no base. Deltas never chain: a base is always a full list.
    """

    base: str | None = None
    added: bytes = b""
    removed: bytes = b""


class Endorsement(msgspec.Struct):
    """What the password holder signs: the snapshots that existed when the password was used.

    `head` is the newest of them (by time); `previous` the endorsement this one follows.
    """

    repo_id: str
    time: str
    snapshots: list[str]
    head: str | None = None
    previous: str | None = None


class EndorsementFile(msgspec.Struct):
    """`endorsements/<id>`: an `Endorsement` (msgpack `body`) and its Ed25519 signature."""

    body: bytes
    signature: bytes


class Lock(msgspec.Struct):
    """`locks/<id>`: held by backups (``kind`` "backup"), prune ("prune") and repairs
    (``exclusive``) while they run. `time` is the last refresh; `started` when it was taken
    (garbage collection waits for every backup that started before its mark)."""

    exclusive: bool
    hostname: str
    pid: int
    time: float
    expires: float
    kind: str = ""
    started: float = 0.0


class ForgetRecord(msgspec.Struct):
    """`forgets/<id>`: snapshots removed without the password (by the services' retention),
    so that `check` can tell them from snapshots deleted by someone without the keys. Removed
    by the next endorsement, which no longer lists them."""

    time: str
    hostname: str
    snapshots: list[str]
    reason: str = ""


class GcOrphan(msgspec.Struct, array_like=True):
    """A pack no index lists, and when garbage collection first saw it so."""

    pack: str
    seen: float


class GcMark(msgspec.Struct):
    """One mark of garbage collection: what it took out of the index, to delete later.

    `snapshots` are the snapshots whose references were live when it was made (a snapshot not
    among them that needs a marked blob gets its pack back); `packs` the packs no index lists
    any more, `index` the index files its index superseded, `references` the lists of
    references no snapshot named."""

    time: float
    snapshots: list[str]
    packs: list[str] = []
    index: list[str] = []
    references: list[str] = []


class GcState(msgspec.Struct):
    """`gc/<id>`: the state of garbage collection (two-phase; see `timevault.core.prune`).

    Usually one exists; each prune run that changes it writes a new one and removes the old
    ones, so the set of `gc/` names changes whenever data may have left the repository (what a
    cache of the index compares to know it is stale)."""

    time: float
    hostname: str
    marks: list[GcMark] = []
    orphans: list[GcOrphan] = []
    last_mark: float = 0.0
    last_snapshots: list[str] = []
    """The snapshots of the last mark: when one of them is gone, there is garbage to mark."""
    marking: float = 0.0
    """Set while a mark is being written (the state is rewritten before the new index, so that
    the generation changes even if prune is killed right after writing it)."""
