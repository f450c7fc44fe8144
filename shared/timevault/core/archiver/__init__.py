"""The backup engine; see `archiver.py`."""

from timevault.core.archiver.archiver import (
    BackupCanceled,
    BackupError,
    BlobSink,
    IndexKnownBlobs,
    KnownBlobs,
    PackerSink,
    Progress,
    ProgressCallback,
    backup,
    left_out,
)

__all__ = [
    "BackupCanceled",
    "BackupError",
    "BlobSink",
    "IndexKnownBlobs",
    "KnownBlobs",
    "PackerSink",
    "Progress",
    "ProgressCallback",
    "backup",
    "left_out",
]
