"""The repository format: config, keys, packs, index, trees, snapshots and locks."""

from shared.repository.blobs import CorruptBlob, EncodedBlob
from shared.repository.format import BlobType, Node, Snapshot, Tree, WriteKeys
from shared.repository.keys import WeakPassword, WrongPassword, check_password
from shared.repository.repo import (
    NotARepository,
    ReadAccessRequired,
    Repository,
    RepositoryError,
    RepositoryLocked,
)

__all__ = [
    "BlobType",
    "CorruptBlob",
    "EncodedBlob",
    "Node",
    "NotARepository",
    "ReadAccessRequired",
    "Repository",
    "RepositoryError",
    "RepositoryLocked",
    "Snapshot",
    "Tree",
    "WeakPassword",
    "WriteKeys",
    "WrongPassword",
    "check_password",
]
