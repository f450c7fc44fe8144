"""The repository format: config, keys, packs, index, trees, snapshots, history and locks."""

from timevault.core.errors import (
    ConfigError,
    CorruptBlob,
    HistoryError,
    NotARepository,
    ReadAccessRequired,
    RepositoryError,
    RepositoryLocked,
    RepositoryNotFound,
    WeakPassword,
    WrongPassword,
)
from timevault.core.repository.blobs import EncodedBlob
from timevault.core.repository.format import BlobType, Node, Snapshot, Tree, WriteKeys
from timevault.core.repository.keys import check_password
from timevault.core.repository.repo import Repository

__all__ = [
    "BlobType",
    "ConfigError",
    "CorruptBlob",
    "EncodedBlob",
    "HistoryError",
    "Node",
    "NotARepository",
    "ReadAccessRequired",
    "Repository",
    "RepositoryError",
    "RepositoryLocked",
    "RepositoryNotFound",
    "Snapshot",
    "Tree",
    "WeakPassword",
    "WriteKeys",
    "WrongPassword",
    "check_password",
]
