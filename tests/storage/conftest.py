"""Fixtures: a real moto S3 server per session, and a `storage` fixture for every location."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.storage.fault_proxy import FaultProxy
from tests.support.moto_server import DUMMY_AWS_ENV, create_bucket, start_moto_server
from timevault.core.storage import Storage, open_location
from timevault.core.storage.local import LocalStorage
from timevault.core.storage.s3 import S3Options, S3Storage

BUCKET = "timevault-test"

# Every location the conformance suite runs against. "s3-wrapped" is what open_location
# gives users: Limited(Retrying(S3)).
LOCATIONS = [
    pytest.param("local"),
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("s3-wrapped", marks=pytest.mark.s3),
]


@pytest.fixture(scope="session")
def aws_env() -> Iterator[None]:
    """Dummy credentials for the whole session; never the developer's real ones."""
    saved = {key: os.environ.get(key) for key in DUMMY_AWS_ENV}
    os.environ.update(DUMMY_AWS_ENV)
    os.environ.pop("AWS_PROFILE", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def moto_endpoint(aws_env: None) -> Iterator[str]:
    url, stop = start_moto_server()
    try:
        yield url
    finally:
        stop()


@pytest.fixture(scope="session")
async def s3_bucket(moto_endpoint: str) -> str:
    await create_bucket(moto_endpoint, BUCKET)
    return BUCKET


def unique_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


StorageFactory = Callable[[], Storage]


@pytest.fixture
async def opened_storages() -> AsyncIterator[list[Storage]]:
    """Storages opened by a test, closed at its end inside the event loop."""
    opened: list[Storage] = []
    yield opened
    for storage in opened:
        await storage.close()


@pytest.fixture(params=LOCATIONS)
def make_storage(
    request: pytest.FixtureRequest, tmp_path: Path, opened_storages: list[Storage]
) -> StorageFactory:
    """A factory opening the same (fresh, empty) location on each call."""
    kind: str = request.param
    if kind == "local":
        root = tmp_path / "repo"
        root.mkdir()

        def factory() -> Storage:
            return LocalStorage(root)

    else:
        # Looked up only here so that local-only runs never start moto.
        endpoint: str = request.getfixturevalue("moto_endpoint")
        bucket: str = request.getfixturevalue("s3_bucket")
        prefix = unique_prefix()
        if kind == "s3":

            def factory() -> Storage:
                return S3Storage(S3Options(bucket, prefix, endpoint=endpoint, path_style=True))

        else:

            def factory() -> Storage:
                return open_location(f"s3://{bucket}/{prefix}?endpoint={endpoint}&path_style=true")

    def tracked() -> Storage:
        storage = factory()
        opened_storages.append(storage)
        return storage

    return tracked


@pytest.fixture
def storage(make_storage: StorageFactory) -> Storage:
    return make_storage()


@pytest.fixture
async def fault_proxy(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(moto_endpoint)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
