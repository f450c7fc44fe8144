"""A repository in a TimeVault Space (``timevault space serve``) as a `Storage` location.

Location URLs::

    space://HOST[:PORT]/REPO[?ca=FILE&concurrency=N]   HTTPS (ca: a private CA's certificate)
    space+http://HOST:PORT/REPO[?concurrency=N]         plain HTTP, loopback hosts only

The device token that signs this TimeVault in to the Space (``timevault space login``) is given
separately, never in the URL, and never appears in `location`, an error message or a log line.

The Space keeps each account's repositories apart, counts every write against the account's
quota and keeps deleted objects in a trash; to this class it is a plain object store with
``PUT``/``GET`` (with ``Range``)/``HEAD``/``DELETE`` on ``/space/v1/repos/REPO/objects/NAME``,
paged listing and batch deletes. Like `S3Storage` it only speaks the protocol: `open_location`
wraps it in `RetryingStorage` and `LimitedStorage`, so every transient failure (5xx, 429, a
dropped or refused connection, a timeout) surfaces as `TransientStorageError`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import payload as aiohttp_payload

from timevault.core.errors import ObjectExists, SpaceQuotaExceeded, SpaceSignedOut
from timevault.core.storage.base import (
    LocationError,
    ObjectInfo,
    ObjectNotFound,
    Payload,
    StorageError,
    TransientStorageError,
    check_name,
    check_range,
    payload_parts,
)
from timevault.core.storage.space_url import (
    SpaceEndpoint,
    SpaceOptions,
    is_space_location,
    parse_space_location,
    parse_space_url,
    space_origin,
)

__all__ = [
    "SpaceEndpoint",
    "SpaceOptions",
    "SpaceQuotaExceeded",
    "SpaceSignedOut",
    "SpaceStorage",
    "is_space_location",
    "open_space_location",
    "parse_space_location",
    "parse_space_url",
    "space_origin",
    "ssl_for",
]

DELETE_BATCH = 1000
LIST_PAGE = 1000
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, ConnectionError)


def ssl_for(base_url: str, ca: str | None) -> ssl.SSLContext | bool:
    """The TLS settings for a Space: the system's CAs, or only `ca` when given."""
    if not base_url.startswith("https://"):
        return False
    if ca is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise LocationError(f"cannot load the CA certificate {ca}: {exc}") from exc


class _PartsPayload(aiohttp_payload.Payload):
    """A request body made of buffers sent one after the other (no joined copy of a pack)."""

    def __init__(self, parts: list[memoryview]) -> None:
        super().__init__(parts, content_type="application/octet-stream")
        self._parts = parts
        self._size = sum(part.nbytes for part in parts)

    async def write(self, writer: Any) -> None:
        for part in self._parts:
            if part.nbytes:
                await writer.write(part)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._parts).decode(encoding, errors)


def open_space_location(url: str, token: str | None) -> SpaceStorage:
    """Open a Space location as a bare `SpaceStorage` (no retry, no limits; see open_location)."""
    return SpaceStorage(parse_space_location(url), token)


class SpaceStorage:
    """Objects of one repository of the account the device token belongs to.

    The aiohttp session binds to the event loop it was created in, so it is created lazily on
    first use, inside the running loop, and released by `close`.
    """

    supports_delete_many = True  # POST /repos/REPO/delete, see timevault/core/storage/batch.py
    supports_put_new = True  # PUT with If-None-Match: *, see timevault/core/storage/once.py

    def __init__(
        self,
        options: SpaceOptions,
        token: str | None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        list_page_size: int = LIST_PAGE,
    ) -> None:
        self._options = options
        self._list_page_size = list_page_size
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._ssl = ssl_for(options.base_url, options.ca)
        self._prefix = f"{options.base_url}/space/v1/repos/{options.repo}"
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def location(self) -> str:
        return self._options.location

    @property
    def options(self) -> SpaceOptions:
        return self._options

    @property
    def concurrency(self) -> int:
        return self._options.concurrency

    def _where(self, op: str, name: str) -> str:
        return f"{self.location}: {op} {name}"

    def _http(self, op: str, name: str) -> aiohttp.ClientSession:
        if self._closed:
            raise StorageError(f"{self.location}: storage is closed")
        if self._token is None:
            raise SpaceSignedOut(f"{self._where(op, name)}: signed out of Space (no device token): sign in to "
                                 f"this Space first (timevault space login {self._options.base_url})")
        loop = asyncio.get_running_loop()
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=max(10, 2 * self.concurrency), ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._token}"},
                auto_decompress=False,
            )
            self._loop = loop
        elif loop is not self._loop:
            raise StorageError(f"{self.location}: used from a different event loop than it was opened in")
        return self._session

    def _object_url(self, name: str) -> str:
        return f"{self._prefix}/objects/{quote(check_name(name), safe='/')}"

    async def _refusal(self, response: aiohttp.ClientResponse, op: str, name: str) -> StorageError:
        """The error for a non-success answer, with the Space's own message."""
        message = ""
        try:
            body = json.loads(await response.read())
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict):
                message = str(error.get("message") or "")
        except (ValueError, aiohttp.ClientError, TimeoutError):
            pass
        status = response.status
        detail = f"{status} {message or response.reason or ''}".strip()
        where = self._where(op, name)
        if status == 401:
            return SpaceSignedOut(f"{where}: signed out of Space: {message or 'the device token was refused'}")
        if status == 404:
            return ObjectNotFound(f"{where}: object not found")
        if status == 412:
            return ObjectExists(f"{where}: object exists")
        if status == 413 and "quota" in message:
            return SpaceQuotaExceeded(f"{where}: {message}")
        if status == 429 or status >= 500:
            return TransientStorageError(f"{where}: {detail}")
        return StorageError(f"{where}: {detail}")

    async def _send(self, op: str, name: str, method: str, url: str, **kwargs: Any) -> tuple[bytes, int | None]:
        """One request; returns the body and declared size of a 2xx answer (416: empty),
        raises the mapped error otherwise."""
        http = self._http(op, name)
        try:
            async with http.request(method, url, allow_redirects=False, **kwargs) as response:
                if response.status == 416:  # the range starts at or past the end: nothing to read
                    return b"", 0
                if response.status >= 300:
                    raise await self._refusal(response, op, name)
                if method == "HEAD":
                    size = response.headers.get("X-Object-Size")
                    return b"", int(size) if size and size.isdigit() else response.content_length
                data = await response.read()
                expected = response.content_length
                if expected is not None and len(data) != expected:
                    raise TransientStorageError(f"{self._where(op, name)}: short read ({len(data)} of {expected} bytes)")
                return data, expected
        except StorageError:
            raise
        except _TRANSIENT_ERRORS as exc:
            raise TransientStorageError(f"{self._where(op, name)}: {type(exc).__name__}: {exc}") from exc

    async def put(self, name: str, data: Payload) -> None:
        url = self._object_url(name)
        await self._send("put", name, "PUT", url, data=_PartsPayload(payload_parts(data)))

    async def put_new(self, name: str, data: Payload) -> bool:
        """`put` with ``If-None-Match: *``: the Space refuses (412) to replace an existing object."""
        url = self._object_url(name)
        try:
            await self._send("put", name, "PUT", url, data=_PartsPayload(payload_parts(data)),
                             headers={"If-None-Match": "*"})
        except ObjectExists:
            return False
        return True

    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_range(offset, length)
        url = self._object_url(name)
        if length == 0:
            await self.stat(name)  # nothing to read, but a missing object is still an error
            return b""
        headers = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
        data, _ = await self._send("get", name, "GET", url, headers=headers)
        return data

    async def stat(self, name: str) -> ObjectInfo:
        _, size = await self._send("stat", name, "HEAD", self._object_url(name))
        if size is None:
            raise TransientStorageError(f"{self._where('stat', name)}: the answer has no size")
        return ObjectInfo(name, size)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        after = ""
        label = prefix or "(all)"
        while True:
            params = {"prefix": prefix, "limit": str(self._list_page_size)}
            if after:
                params["after"] = after
            body, _ = await self._send("list", label, "GET", f"{self._prefix}/objects", params=params)
            try:
                page = json.loads(body)
                entries = [(str(e["name"]), int(e["size"])) for e in page["objects"]]
                after = page.get("next") or ""
            except (ValueError, KeyError, TypeError) as exc:
                raise TransientStorageError(f"{self._where('list', label)}: unreadable answer") from exc
            for name, size in entries:
                yield ObjectInfo(name, size)
            if not after:
                return

    async def delete(self, name: str) -> None:
        await self._send("delete", name, "DELETE", self._object_url(name))

    async def delete_many(self, names: Iterable[str]) -> None:
        batch = [check_name(name) for name in names]
        for start in range(0, len(batch), DELETE_BATCH):
            chunk = batch[start : start + DELETE_BATCH]
            await self._send("delete", f"{len(chunk)} objects", "POST", f"{self._prefix}/delete",
                             json={"names": chunk})

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
