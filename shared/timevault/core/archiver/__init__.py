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
from timevault.core.archiver.excludes import ExcludeError, ExcludeOptions

__all__ = [
    "BackupCanceled",
    "BackupError",
    "BlobSink",
    "ExcludeError",
    "ExcludeOptions",
    "IndexKnownBlobs",
    "KnownBlobs",
    "PackerSink",
    "Progress",
    "ProgressCallback",
    "backup",
    "left_out",
]
