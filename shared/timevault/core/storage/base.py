"""The storage contract: one small async interface that every location implements.

A repository only ever talks to storage through `Storage`. Locations (local folder, S3, ...)
are separate implementations; retry, fault injection and concurrency limits are wrappers
around any `Storage`, never code inside one location.

Object names are relative, '/'-separated paths such as ``config``, ``keys/<id>`` or
``data/ab/<id>``. They never start with '/', never contain '..' or empty segments.

Guarantees every implementation must give:

- ``put`` is atomic: a reader sees either no object or the whole object, never a part.
  Writing the same name twice with the same bytes is harmless (repeated delivery).
- After ``put`` returns, the object is durable and ``get``/``stat`` see it (read-after-write).
- ``list`` may lag behind writes (S3 gives no stronger promise); nothing correctness-critical
  may depend on an object appearing in a listing right after it was written.
- ``delete`` of a missing object is not an error (idempotent).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

from timevault.core.buffers import BytesLike
from timevault.core.errors import (
    InvalidObjectName,
    InvalidRange,
    LocationError,
    LocationFull,
    LocationNotFound,
    LocationReadOnly,
    ObjectNotFound,
    StorageError,
    TransientStorageError,
)

__all__ = [  # the errors are defined in timevault.core.errors and belong to this contract too
    "BytesLike",
    "InvalidObjectName",
    "InvalidRange",
    "LocationError",
    "LocationFull",
    "LocationNotFound",
    "LocationReadOnly",
    "ObjectInfo",
    "ObjectNotFound",
    "Payload",
    "Storage",
    "StorageError",
    "TransientStorageError",
    "check_name",
    "check_range",
    "payload_bytes",
    "payload_parts",
    "payload_size",
]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What `stat` and `list` report about one stored object."""

    name: str
    size: int


Payload: TypeAlias = BytesLike | Sequence[BytesLike]
"""What `put` stores: one buffer, or parts stored one after the other as one object.

Parts let a pack go to disk with one gathered write instead of first being joined into a
fresh 16 MiB buffer (a copy that holds the GIL and faults in every page)."""


def payload_parts(data: Payload) -> list[memoryview]:
    """The payload as a list of byte views (no copies)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return [memoryview(data).cast("B")]
    return [memoryview(part).cast("B") for part in data]


def payload_size(data: Payload) -> int:
    return sum(part.nbytes for part in payload_parts(data))


def payload_bytes(data: Payload) -> BytesLike:
    """One buffer holding the payload; joins parts (for locations that need one body)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return data
    return b"".join(data)


# Used with fullmatch: "^...$" would also accept a name ending in a newline.
_VALID_NAME = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


def check_range(offset: int, length: int | None) -> None:
    """Raise InvalidRange unless `offset` >= 0 and `length` is None or >= 0."""
    if offset < 0 or (length is not None and length < 0):
        raise InvalidRange(f"invalid byte range: offset={offset} length={length}")


def check_name(name: str) -> str:
    """Return `name` if it is a safe relative object name, else raise InvalidObjectName."""
    if not _VALID_NAME.fullmatch(name) or any(part in (".", "..") for part in name.split("/")):
        raise InvalidObjectName(f"invalid object name {name!r}")
    return name


@runtime_checkable
class Storage(Protocol):
    """An object store holding one repository."""

    @property
    def location(self) -> str:
        """Human-readable location (no secrets), used in error messages and logs."""
        ...

    async def put(self, name: str, data: Payload) -> None:
        """Store `data` (a buffer, or parts in order) under `name` atomically and durably,
        replacing any previous object."""
        ...

    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return the object's bytes, or `length` bytes from `offset` (fewer only at the end).

        Raises ObjectNotFound when the object does not exist.
        """
        ...

    async def stat(self, name: str) -> ObjectInfo:
        """Return the object's size. Raises ObjectNotFound when it does not exist."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Yield every object whose name starts with `prefix`, in no particular order."""
        ...

    async def delete(self, name: str) -> None:
        """Remove the object; a missing object is not an error."""
        ...

    async def close(self) -> None:
        """Release connections and files. The storage is unusable afterwards."""
        ...
