"""Storage locations behind one interface; `open_location` turns a location string into one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from timevault.core.storage.base import (
    InvalidObjectName,
    InvalidRange,
    LocationError,
    LocationFull,
    LocationNotFound,
    LocationReadOnly,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageError,
    TransientStorageError,
    check_name,
)
from timevault.core.storage.batch import delete_many
from timevault.core.storage.limits import LimitedStorage
from timevault.core.storage.local import LocalStorage
from timevault.core.storage.retry import RetryingStorage

if TYPE_CHECKING:
    from timevault.core.storage.s3 import S3Credentials

__all__ = [
    "InvalidObjectName",
    "InvalidRange",
    "LimitedStorage",
    "LocalStorage",
    "LocationError",
    "LocationFull",
    "LocationNotFound",
    "LocationReadOnly",
    "ObjectInfo",
    "ObjectNotFound",
    "RetryingStorage",
    "Storage",
    "StorageError",
    "TransientStorageError",
    "check_name",
    "delete_many",
    "open_location",
]


def open_location(location: str, credentials: S3Credentials | None = None, *,
                  allow_private_endpoints: bool = True) -> Storage:
    """Open a location: a folder path, ``file:///abs/path`` or ``s3://bucket/prefix?...``.

    S3 comes wrapped as Limited(Retrying(S3)): transient failures are retried with backoff,
    and at most ``concurrency`` (URL parameter, default 4) requests are in flight. With
    `allow_private_endpoints` False (the services' default), an S3 endpoint on a loopback,
    link-local or private address is refused.
    `credentials` (S3 only) take the place of the AWS chain.
    """
    if location.startswith("s3://"):
        # Imported here so that local-only installs never load aiobotocore.
        from timevault.core.storage.s3 import open_s3_location

        s3 = open_s3_location(location, credentials, allow_private_endpoints=allow_private_endpoints)
        return LimitedStorage(RetryingStorage(s3), s3.concurrency)
    if location.startswith("file://"):
        parsed = urlparse(location)
        if parsed.netloc not in ("", "localhost"):
            raise LocationError(f"file location must be local: {location}")
        return LocalStorage(unquote(parsed.path))
    if "://" in location:
        raise LocationError(f"unsupported location scheme: {location.split('://', 1)[0]}")
    return LocalStorage(Path(location).expanduser())
