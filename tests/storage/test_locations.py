"""Location strings: parsing, validation, wrapping, and keeping secrets out of everything."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timevault.core.storage import (
    InvalidObjectName,
    LimitedStorage,
    LocalStorage,
    LocationError,
    RetryingStorage,
    StorageError,
    check_name,
    open_location,
)
from timevault.core.storage.s3 import DEFAULT_CONCURRENCY, S3Options, S3Storage, parse_s3_location

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"


def test_full_s3_location() -> None:
    options = parse_s3_location(
        "s3://my-bucket/backups/laptop?endpoint=http://127.0.0.1:9000&region=eu-west-1"
        "&path_style=true&concurrency=8&profile=nas"
    )
    assert options == S3Options(
        bucket="my-bucket",
        prefix="backups/laptop",
        endpoint="http://127.0.0.1:9000",
        region="eu-west-1",
        path_style=True,
        concurrency=8,
        profile="nas",
    )


def test_minimal_s3_location() -> None:
    assert parse_s3_location("s3://bucket") == S3Options("bucket")
    assert parse_s3_location("s3://bucket/").prefix == ""
    assert S3Storage(parse_s3_location("s3://bucket")).location == "s3://bucket"
    assert S3Storage(parse_s3_location("s3://bucket/a/b/?region=us-east-1")).location == "s3://bucket/a/b"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"s3://AKIAEXAMPLE:{SECRET}@bucket/p", "must not contain credentials"),
        (f"s3://bucket/p?endpoint=http://user:{SECRET}@host:9000", "must not contain credentials"),
        (f"s3://bucket/p?aws_secret_access_key={SECRET}", "unknown S3 location parameter"),
        ("s3://bucket/p?region=us-east-1&region=eu-west-1", "more than once"),
        ("s3://bucket/p?concurrency=0", "between 1 and"),
        ("s3://bucket/p?concurrency=lots", "whole number"),
        ("s3://bucket/p?path_style=maybe", "true or false"),
        ("s3://bucket/p?endpoint=ftp://host", "http:// or https://"),
        ("s3://bucket/p?endpoint=http://host/path", r"scheme://host\[:port\] only"),
        ("s3://bucket/a/../b", "invalid S3 prefix"),
        ("s3://bucket/a//b", "invalid S3 prefix"),
        ("s3:///prefix", "invalid S3 bucket name"),
        ("s3://bucket?region=Not_A_Region", "invalid S3 region"),
    ],
)
def test_bad_s3_locations_are_refused_without_echoing_secrets(url: str, message: str) -> None:
    with pytest.raises(LocationError, match=message) as excinfo:
        open_location(url)
    assert SECRET not in str(excinfo.value)


def test_open_location_wraps_s3_in_limits_and_retries() -> None:
    storage = open_location("s3://bucket/pre?endpoint=http://127.0.0.1:1&path_style=1&concurrency=6")
    assert isinstance(storage, LimitedStorage)
    assert storage.max_concurrent == 6
    assert isinstance(storage.inner, RetryingStorage)
    assert isinstance(storage.inner.inner, S3Storage)
    assert storage.location == "s3://bucket/pre"
    default = open_location("s3://bucket")
    assert isinstance(default, LimitedStorage) and default.max_concurrent == DEFAULT_CONCURRENCY


def test_local_locations(tmp_path: Path) -> None:
    assert isinstance(open_location(str(tmp_path)), LocalStorage)
    assert open_location(f"file://{tmp_path}").location == str(tmp_path)
    with pytest.raises(LocationError):
        open_location("ftp://host/x")
    with pytest.raises(LocationError):
        open_location("file://otherhost/x")


async def test_unreachable_endpoint_is_a_clear_transient_error(aws_env: None) -> None:
    # Port 1 on loopback refuses connections at once.
    storage = S3Storage(parse_s3_location("s3://bucket/pre?endpoint=http://127.0.0.1:1&path_style=true"))
    retrying = RetryingStorage(storage, attempts=2, base_delay=0.0, max_delay=0.0)
    try:
        with pytest.raises(StorageError, match=r"^s3://bucket/pre: put config: failed after 2 attempts: "):
            await retrying.put("config", b"c")
    finally:
        await storage.close()
    with pytest.raises(StorageError, match="closed"):
        await storage.get("config")


_ALLOWED = set(string.ascii_letters + string.digits + "._-")


@given(st.text(max_size=40))
def test_check_name_accepts_exactly_safe_relative_names(name: str) -> None:
    segments = name.split("/")
    safe = bool(name) and all(seg and seg not in (".", "..") and set(seg) <= _ALLOWED for seg in segments)
    if safe:
        assert check_name(name) == name
    else:
        with pytest.raises(InvalidObjectName):
            check_name(name)
