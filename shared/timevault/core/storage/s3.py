"""S3 and S3-compatible object stores (AWS, MinIO, Ceph, Garage, ...) as a `Storage` location.

Location URL::

    s3://BUCKET[/PREFIX][?endpoint=http://host:port&region=us-east-1&path_style=true
                          &concurrency=4&profile=NAME]

Credentials come from the caller (`S3Credentials`: the catalog keeps a plan's keys like its write
keys, so they can be given in the web UI and the API), else from the standard AWS chain
(environment variables, shared config and credentials files, a profile, instance or container
roles). A URL carrying credentials is refused, and no credential ever appears in `location`, an
error message or a log line.

This class only speaks S3. Retrying transient failures and bounding concurrency are wrappers
(`RetryingStorage`, `LimitedStorage`) that `open_location` puts around it; so the client's own
retries are switched off and every transient failure surfaces as `TransientStorageError`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import aiohttp.abc
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore import exceptions as boto

from timevault.core.errors import ObjectExists
from timevault.core.storage.base import (
    BytesLike,
    InvalidObjectName,
    LocationError,
    LocationNotFound,
    ObjectInfo,
    ObjectNotFound,
    Payload,
    StorageError,
    TransientStorageError,
    check_name,
    check_range,
    payload_bytes,
)

MiB = 1024 * 1024
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 64
# Packs are ~16 MiB, so they go up in one PutObject; only bigger objects pay for multipart.
MULTIPART_THRESHOLD = 32 * MiB
PART_SIZE = 8 * MiB
# DeleteObjects accepts at most 1000 keys per request.
DELETE_BATCH = 1000
# Hashing a few MiB takes milliseconds; do that off the event loop (hashlib releases the GIL).
_HASH_IN_THREAD = 1 * MiB

_PARAMS = frozenset({"endpoint", "region", "path_style", "concurrency", "profile"})
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
_REGION = re.compile(r"^[a-z0-9-]{1,64}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# Error codes that mean "try again later", whatever the HTTP status says.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        # The body was damaged on the way: a fresh upload of the same bytes is the fix.
        "BadDigest",
        "IncompleteBody",
        "XAmzContentSHA256Mismatch",
        # Another conditional write of the same key is in flight: the retry sees its outcome.
        "ConditionalRequestConflict",
    }
)
# Client-side failures that are about the network, not about the request.
_TRANSIENT_CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    boto.HTTPClientError,  # includes read timeouts, closed connections, streaming errors
    boto.ConnectionError,  # includes connect timeouts and refused connections
    boto.IncompleteReadError,
    boto.ChecksumError,
    boto.FlexibleChecksumError,
    aiohttp.ClientError,
    TimeoutError,
    ConnectionError,
)


@dataclass(frozen=True, slots=True)
class S3Credentials:
    """An access key for S3, given by the caller instead of the AWS chain. Never printed."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class S3Options:
    """A parsed ``s3://`` location; holds no secrets."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    path_style: bool = False
    concurrency: int = DEFAULT_CONCURRENCY
    profile: str | None = None
    allow_private: bool = True  # False: connect only to public addresses (service mode)


def parse_s3_location(url: str) -> S3Options:
    """Parse and validate an ``s3://`` location URL. Errors never echo parameter values."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise LocationError("an S3 location must start with s3://")
    if "@" in parts.netloc:
        raise LocationError(
            "an S3 location must not contain credentials; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or use a profile (AWS_PROFILE or ?profile=NAME)"
        )
    bucket = parts.netloc
    if not _BUCKET.match(bucket):
        raise LocationError(f"invalid S3 bucket name {bucket!r}")
    prefix = unquote(parts.path).strip("/")
    if prefix:
        try:
            check_name(prefix)
        except InvalidObjectName:
            raise LocationError(f"invalid S3 prefix {prefix!r}") from None
    try:
        params = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise LocationError("malformed query string in S3 location") from None
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise LocationError(
            f"unknown S3 location parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(_PARAMS))}"
        )
    for key, values in params.items():
        if len(values) != 1:
            raise LocationError(f"S3 location parameter {key} given more than once")
    value = {key: values[0] for key, values in params.items()}

    endpoint = value.get("endpoint") or None
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.hostname:
            raise LocationError("S3 endpoint must be an http:// or https:// URL with a host")
        if ep.username is not None or ep.password is not None:
            raise LocationError("S3 endpoint must not contain credentials")
        if ep.query or ep.fragment or ep.path not in ("", "/"):
            raise LocationError("S3 endpoint must be scheme://host[:port] only")
        endpoint = f"{ep.scheme}://{ep.netloc}"

    region = value.get("region") or None
    if region is not None and not _REGION.match(region):
        raise LocationError(f"invalid S3 region {region!r}")

    path_style = False
    if "path_style" in value:
        flag = value["path_style"].lower()
        if flag not in _TRUE | _FALSE:
            raise LocationError("S3 parameter path_style must be true or false")
        path_style = flag in _TRUE

    concurrency = DEFAULT_CONCURRENCY
    if "concurrency" in value:
        try:
            concurrency = int(value["concurrency"])
        except ValueError:
            raise LocationError("S3 parameter concurrency must be a whole number") from None
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise LocationError(f"S3 parameter concurrency must be between 1 and {MAX_CONCURRENCY}")

    profile = value.get("profile") or None
    return S3Options(bucket, prefix, endpoint, region, path_style, concurrency, profile)


def open_s3_location(url: str, credentials: S3Credentials | None = None, *,
                     allow_private_endpoints: bool = True) -> S3Storage:
    """Open an ``s3://`` location as a bare `S3Storage` (no retry, no limits; see open_location).

    With `allow_private_endpoints` False, an endpoint given as a loopback, link-local or private
    IP address (or ``localhost``) is refused here, and names are checked when they resolve.
    `credentials` take the place of the AWS chain.
    """
    options = parse_s3_location(url)
    if not allow_private_endpoints:
        options = dataclasses.replace(options, allow_private=False)
        host = urlsplit(options.endpoint).hostname if options.endpoint else None
        if host is not None and (host.lower() == "localhost" or host.lower().endswith(".localhost")):
            raise LocationError(_PRIVATE_REFUSED.format(host=host, address="loopback"))
        literal = None
        if host is not None:
            with contextlib.suppress(ValueError):
                literal = ipaddress.ip_address(host)
        if literal is not None and not public_address(literal):
            raise LocationError(_PRIVATE_REFUSED.format(host=host, address=literal))
    return S3Storage(options, credentials=credentials)


_PRIVATE_REFUSED = (
    "S3 endpoint {host} is a private address ({address}); the services refuse loopback, link-local "
    "and private endpoints unless started with --allow-private-endpoints"
)
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")


def public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `address` is a public one (not loopback, link-local, private, reserved, ...)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE)
    )


class _PublicOnlyResolver(aiohttp.abc.AbstractResolver):
    """Resolves names like aiohttp's default resolver, then drops every non-public address, so
    a name that resolves (or later re-resolves) to an internal address is never connected to."""

    def __init__(self) -> None:
        self._inner = aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        found = await self._inner.resolve(host, port, family)
        public = [entry for entry in found if public_address(ipaddress.ip_address(entry["host"]))]
        if not public:
            raise OSError(f"S3 endpoint {host} resolves only to private addresses (refused in service mode)")
        return public

    async def close(self) -> None:
        await self._inner.close()


async def _content_md5(data: BytesLike) -> str:
    if len(data) >= _HASH_IN_THREAD:
        digest = await asyncio.to_thread(_md5_digest, data)
    else:
        digest = _md5_digest(data)
    return base64.b64encode(digest).decode("ascii")


def _md5_digest(data: BytesLike) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


_sessions: dict[str | None, AioSession] = {}


def _session(profile: str | None) -> AioSession:
    """One botocore session per profile for the process.

    A fresh session parses the large S3 service model again (hundreds of milliseconds);
    sessions hold no event-loop state, so clients in any loop can share one.
    """
    session = _sessions.get(profile)
    if session is None:
        session = _sessions[profile] = AioSession(profile=profile)
    return session


def _error_code(exc: boto.ClientError) -> tuple[int | None, str]:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(exc.response.get("Error", {}).get("Code", "") or "")
    return status, code


class S3Storage:
    """Objects are keys ``PREFIX/name`` in one bucket.

    S3 gives atomic whole-object writes and (since 2020, on AWS) read-after-write consistency;
    listings are used only where lag is harmless. Uploads carry Content-MD5 so the server
    rejects a body damaged in transit: it is understood by every S3-compatible server, unlike
    the newer flexible checksums, which botocore sends as chunked trailers that several
    S3-compatible servers refuse. So botocore's own checksums are limited to where S3 demands
    one.

    The aiobotocore client binds to the event loop it was created in, so it is created lazily
    on first use, inside the running loop, and released by `close`.
    """

    supports_delete_many = True  # DeleteObjects, see timevault/core/storage/batch.py
    supports_put_new = True  # conditional PutObject, see timevault/core/storage/once.py

    def __init__(
        self,
        options: S3Options,
        *,
        credentials: S3Credentials | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
        list_page_size: int = 1000,
    ) -> None:
        if part_size < 5 * MiB:
            raise ValueError("S3 parts must be at least 5 MiB")
        self._options = options
        self._credentials = credentials
        self._key_prefix = f"{options.prefix}/" if options.prefix else ""
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._list_page_size = list_page_size
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client_lock = asyncio.Lock()
        self._closed = False

    @property
    def location(self) -> str:
        opts = self._options
        return f"s3://{opts.bucket}/{opts.prefix}" if opts.prefix else f"s3://{opts.bucket}"

    @property
    def options(self) -> S3Options:
        return self._options

    @property
    def concurrency(self) -> int:
        """How many requests the location asked to have in flight (the `concurrency` parameter)."""
        return self._options.concurrency

    def _key(self, name: str) -> str:
        return self._key_prefix + check_name(name)

    async def _s3(self) -> Any:
        if self._closed:
            raise StorageError(f"{self.location}: storage is closed")
        loop = asyncio.get_running_loop()
        if self._client is not None:
            if loop is not self._loop:
                raise StorageError(f"{self.location}: used from a different event loop than it was opened in")
            return self._client
        async with self._client_lock:
            if self._client is None:
                self._client = await self._create_client()
                self._loop = loop
        return self._client

    async def _create_client(self) -> Any:
        opts = self._options
        config = AioConfig(
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            # RetryingStorage is the one place retries happen (with backoff, jitter and a budget).
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path" if opts.path_style else "auto"},
            # Room for every request LimitedStorage lets through plus a multipart abort.
            max_pool_connections=max(10, 2 * opts.concurrency),
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            signature_version="s3v4",
            connector_args=None if opts.allow_private else {"resolver": _PublicOnlyResolver()},
        )
        stack = AsyncExitStack()
        try:
            session = _session(opts.profile)
            keys = self._credentials
            creator = session.create_client(
                "s3", region_name=opts.region, endpoint_url=opts.endpoint, config=config,
                aws_access_key_id=keys.access_key_id if keys else None,
                aws_secret_access_key=keys.secret_access_key if keys else None,
                aws_session_token=keys.session_token if keys else None,
            )
            client = await stack.enter_async_context(creator)
        except boto.BotoCoreError as exc:
            await stack.aclose()
            # Such errors name a missing profile or region, never a secret.
            raise StorageError(f"{self.location}: cannot open S3 client: {exc}") from exc
        self._stack = stack
        return client

    @contextlib.contextmanager
    def _errors(self, op: str, name: str) -> Iterator[None]:
        """Turn botocore/aiohttp failures into StorageError naming location, operation and object."""
        where = f"{self.location}: {op} {name}"
        try:
            yield
        except boto.ClientError as exc:
            status, code = _error_code(exc)
            if code == "NoSuchBucket":
                raise LocationNotFound(f"{where}: bucket {self._options.bucket} does not exist") from exc
            if code in _NOT_FOUND_CODES:
                raise ObjectNotFound(f"{where}: object not found") from exc
            if code == "PreconditionFailed" and op == "put":
                raise ObjectExists(f"{where}: object exists") from exc
            detail = f"{status} {code}".strip()
            message = exc.response.get("Error", {}).get("Message")
            if message and message != code:
                detail = f"{detail}: {message}"
            if code in _TRANSIENT_CODES or status is None or status >= 500 or status == 429:
                raise TransientStorageError(f"{where}: {detail}") from exc
            raise StorageError(f"{where}: {detail}") from exc
        except (boto.NoCredentialsError, boto.PartialCredentialsError) as exc:
            raise StorageError(
                f"{where}: no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or a profile)"
            ) from exc
        except _TRANSIENT_CLIENT_ERRORS as exc:
            raise TransientStorageError(f"{where}: {type(exc).__name__}: {exc}") from exc
        except boto.BotoCoreError as exc:
            raise StorageError(f"{where}: {type(exc).__name__}: {exc}") from exc

    async def put(self, name: str, data: Payload) -> None:
        await self._put(name, data, {})

    async def put_new(self, name: str, data: Payload) -> bool:
        """`put` with ``If-None-Match: *``: S3 refuses (412) to replace an existing key."""
        try:
            await self._put(name, data, {"IfNoneMatch": "*"})
        except ObjectExists:
            return False
        return True

    async def _put(self, name: str, data: Payload, conditions: dict[str, str]) -> None:
        data = payload_bytes(data)  # one request body (parts are a local-disk optimisation)
        key = self._key(name)
        s3 = await self._s3()
        if len(data) > self._multipart_threshold:
            await self._put_multipart(s3, key, name, data, conditions)
            return
        md5 = await _content_md5(data)
        with self._errors("put", name):
            await s3.put_object(Bucket=self._options.bucket, Key=key, Body=data, ContentMD5=md5, **conditions)

    async def _put_multipart(
        self, s3: Any, key: str, name: str, data: BytesLike, conditions: dict[str, str]
    ) -> None:
        bucket = self._options.bucket
        with self._errors("put", name):
            upload = await s3.create_multipart_upload(Bucket=bucket, Key=key)
        upload_id = upload["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            view = memoryview(data)
            # Parts go up one after another: LimitedStorage bounds requests per put, and a
            # failed put is retried whole by RetryingStorage (puts are idempotent).
            for number, start in enumerate(range(0, len(data), self._part_size), start=1):
                chunk = bytes(view[start : start + self._part_size])
                md5 = await _content_md5(chunk)
                with self._errors("put", f"{name} (part {number})"):
                    reply = await s3.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ContentMD5=md5,
                    )
                parts.append({"PartNumber": number, "ETag": reply["ETag"]})
            with self._errors("put", name):
                await s3.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **conditions
                )
        except BaseException:
            # Parts of an unfinished upload are stored (and billed) until aborted. Best effort:
            # the caller needs the original error, not the abort's.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._connect_timeout + self._read_timeout):
                    await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    async def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_range(offset, length)
        key = self._key(name)
        if length == 0:
            await self.stat(name)  # still report a missing object
            return b""
        s3 = await self._s3()
        request: dict[str, Any] = {"Bucket": self._options.bucket, "Key": key}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            request["Range"] = f"bytes={offset}-{end}"
        with self._errors("get", name):
            try:
                reply = await s3.get_object(**request)
            except boto.ClientError as exc:
                # 416: the object exists (a missing one is 404) but starts before `offset`.
                if _error_code(exc)[1] == "InvalidRange":
                    return b""
                raise
            async with reply["Body"] as body:
                data: bytes = await body.read()
        expected = reply.get("ContentLength")
        if expected is not None and len(data) != expected:
            raise TransientStorageError(
                f"{self.location}: get {name}: short read ({len(data)} of {expected} bytes)"
            )
        return data

    async def stat(self, name: str) -> ObjectInfo:
        key = self._key(name)
        s3 = await self._s3()
        with self._errors("stat", name):
            reply = await s3.head_object(Bucket=self._options.bucket, Key=key)
        return ObjectInfo(name, int(reply["ContentLength"]))

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        s3 = await self._s3()
        request: dict[str, Any] = {
            "Bucket": self._options.bucket,
            "Prefix": self._key_prefix + prefix,
            "MaxKeys": self._list_page_size,
        }
        strip = len(self._key_prefix)
        while True:
            with self._errors("list", prefix or "(all)"):
                page = await s3.list_objects_v2(**request)
            for entry in page.get("Contents", ()):
                name = entry["Key"][strip:]
                # Skip keys no repository writes (e.g. "folder/" markers made by web consoles):
                # every listed name must be one get/stat/delete accept.
                try:
                    check_name(name)
                except InvalidObjectName:
                    continue
                yield ObjectInfo(name, int(entry["Size"]))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            request["ContinuationToken"] = token

    async def delete(self, name: str) -> None:
        key = self._key(name)
        s3 = await self._s3()
        # Some S3-compatible servers answer 404 for a missing key; AWS answers 204. Both mean gone.
        with contextlib.suppress(ObjectNotFound), self._errors("delete", name):
            await s3.delete_object(Bucket=self._options.bucket, Key=key)

    async def delete_many(self, names: Iterable[str]) -> None:
        """Delete many objects with DeleteObjects, 1000 keys per request; missing ones are fine."""
        keys = [self._key(name) for name in names]
        if not keys:
            return
        s3 = await self._s3()
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            label = f"{len(batch)} objects"
            with self._errors("delete", label):
                reply = await s3.delete_objects(
                    Bucket=self._options.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            errors = [e for e in reply.get("Errors", ()) if e.get("Code") not in _NOT_FOUND_CODES]
            if errors:
                first = errors[0]
                shown = str(first.get("Key", ""))[len(self._key_prefix) :]
                detail = f"{len(errors)} of {len(batch)} failed, first {shown}: {first.get('Code')}"
                cls = (
                    TransientStorageError
                    if all(e.get("Code") in _TRANSIENT_CODES for e in errors)
                    else StorageError
                )
                raise cls(f"{self.location}: delete {label}: {detail}")

    async def close(self) -> None:
        self._closed = True
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()
