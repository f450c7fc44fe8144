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


# A Space may be restarted (an upgrade, a crash) while a backup runs: its retries span ~30 s.
SPACE_RETRY_ATTEMPTS = 8
SPACE_RETRY_BASE_DELAY = 0.5
SPACE_RETRY_MAX_DELAY = 8.0


def open_location(location: str, credentials: S3Credentials | None = None, *,
                  allow_private_endpoints: bool = True, space_token: str | None = None) -> Storage:
    """Open a location: a folder path, ``file:///abs/path``, ``s3://bucket/prefix?...``, or a
    TimeVault Space, ``space://host[:port]/repo`` (``space+http://`` on loopback).

    S3 and Spaces come wrapped as Limited(Retrying(...)): transient failures are retried with
    backoff, and at most ``concurrency`` (URL parameter, default 4) requests are in flight. With
    `allow_private_endpoints` False (the services' default), an S3 endpoint on a loopback,
    link-local or private address is refused; it does not apply to Spaces, whose address this
    TimeVault signed in to (and plain HTTP is for loopback Spaces only).
    `credentials` (S3 only) take the place of the AWS chain; `space_token` is the device token of
    a Space location (`timevault space login`).
    """
    if location.startswith(("space://", "space+http://")):
        from timevault.core.storage.space import open_space_location

        space = open_space_location(location, space_token)
        retrying = RetryingStorage(space, attempts=SPACE_RETRY_ATTEMPTS, base_delay=SPACE_RETRY_BASE_DELAY,
                                   max_delay=SPACE_RETRY_MAX_DELAY)
        return LimitedStorage(retrying, space.concurrency)
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
