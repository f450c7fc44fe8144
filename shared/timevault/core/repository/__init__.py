"""The repository format: config, keys, packs, index, trees, snapshots and locks."""

from timevault.core.repository.blobs import CorruptBlob, EncodedBlob
from timevault.core.repository.format import BlobType, Node, Snapshot, Tree, WriteKeys
from timevault.core.repository.keys import WeakPassword, WrongPassword, check_password
from timevault.core.repository.repo import (
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
