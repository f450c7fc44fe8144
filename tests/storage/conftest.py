"""Fixtures: a real moto S3 server and a real TimeVault Space per session, and a `storage`
fixture for every location."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.storage.fault_proxy import FaultProxy
from tests.support.moto_server import DUMMY_AWS_ENV, create_bucket, start_moto_server
from tests.support.space_server import SpaceServer
from timevault.core.storage import Storage, open_location
from timevault.core.storage.local import LocalStorage
from timevault.core.storage.s3 import S3Options, S3Storage
from timevault.core.storage.space import SpaceStorage, parse_space_location

BUCKET = "timevault-test"

# Every location the conformance suite runs against. "s3-wrapped" and "space-wrapped" are what
# open_location gives users: Limited(Retrying(S3)), Limited(Retrying(Space)).
LOCATIONS = [
    pytest.param("local"),
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("s3-wrapped", marks=pytest.mark.s3),
    pytest.param("space", marks=pytest.mark.space),
    pytest.param("space-wrapped", marks=pytest.mark.space),
]
SPACE_USER = "conformance"


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


@pytest.fixture(scope="session")
def space_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpaceServer]:
    """One real Space for the session, storing in a folder, with 8 MiB segments (so that the
    suite's reads across 8 MiB boundaries cross segments too)."""
    server = SpaceServer(tmp_path_factory.mktemp("space") / "data", args=["--segment-mib", "8"])
    server.start()
    try:
        server.add_user(SPACE_USER)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def space_token(space_server: SpaceServer) -> str:
    return space_server.sign_in_device(SPACE_USER)


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

    elif kind.startswith("space"):
        # Looked up only here so that other runs never start a Space.
        server: SpaceServer = request.getfixturevalue("space_server")
        token: str = request.getfixturevalue("space_token")
        location = server.location(unique_prefix())
        if kind == "space":

            def factory() -> Storage:
                return SpaceStorage(parse_space_location(location), token)

        else:

            def factory() -> Storage:
                return open_location(location, space_token=token)

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
