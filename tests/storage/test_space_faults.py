"""A Space behind a misbehaving network: the fault proxy between `SpaceStorage` and a real Space.

Transient faults (500, 503, slow answers, connections dropped before or in the middle of an
answer) must be absorbed by RetryingStorage with the data intact; permanent ones (a refused
device token) must surface at once as one clear error naming the location and the operation.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import pytest

from tests.storage.conftest import unique_prefix
from tests.storage.fault_proxy import FaultProxy, Rule
from tests.support.space_server import SpaceServer
from timevault.core.storage import LocationError, RetryingStorage, TransientStorageError
from timevault.core.storage.space import SpaceOptions, SpaceSignedOut, SpaceStorage, parse_space_location

pytestmark = [pytest.mark.space, pytest.mark.timeout(60)]

ATTEMPTS = 3
OBJECT = "/objects/data/ab/pack"  # the path a request for object data/ab/pack ends with
MiB = 1024 * 1024

SpaceFactory = Callable[..., SpaceStorage]


@pytest.fixture
async def space_proxy(space_server: SpaceServer) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(space_server.url)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.fixture
async def make_space(space_server: SpaceServer, space_token: str,
                     space_proxy: FaultProxy) -> AsyncIterator[SpaceFactory]:
    """Opens SpaceStorage on one fresh repository, through the proxy or (direct=True) straight."""
    repo = unique_prefix()
    opened: list[SpaceStorage] = []

    def make(*, direct: bool = False, token: str | None = space_token, **kwargs: object) -> SpaceStorage:
        base = space_server.url if direct else space_proxy.url
        options = parse_space_location(f"space+http://{base.removeprefix('http://')}/{repo}")
        storage = SpaceStorage(options, token, **kwargs)  # type: ignore[arg-type]
        opened.append(storage)
        return storage

    yield make
    for storage in opened:
        await storage.close()


def retrying(inner: SpaceStorage, timeout: float = 5.0) -> RetryingStorage:
    return RetryingStorage(inner, attempts=ATTEMPTS, base_delay=0.01, max_delay=0.05, timeout=timeout)


async def test_error_message_names_location_and_operation(make_space: SpaceFactory, space_proxy: FaultProxy) -> None:
    space = make_space()
    space_proxy.add(Rule("error", method="PUT", status=503))
    with pytest.raises(TransientStorageError) as excinfo:
        await space.put("data/ab/pack", b"payload")
    assert str(excinfo.value).startswith(f"{space.location}: put data/ab/pack: 503")
    assert space_proxy.count("PUT", OBJECT) == 1  # no hidden retries inside the client


async def test_put_survives_5xx_and_drops(make_space: SpaceFactory, space_proxy: FaultProxy) -> None:
    storage = retrying(make_space())
    data = os.urandom(300_000)
    space_proxy.add(
        Rule("error", method="PUT", path=OBJECT, status=503),
        Rule("drop_before", method="PUT", path=OBJECT),
        Rule("error", method="PUT", path=OBJECT, status=500),
    )
    await storage.put("data/ab/pack", data)
    assert space_proxy.count("PUT", OBJECT) == 4
    assert await make_space(direct=True).get("data/ab/pack") == data


async def test_get_survives_500_and_a_cut_mid_body(make_space: SpaceFactory, space_proxy: FaultProxy) -> None:
    data = os.urandom(1 * MiB)
    await make_space(direct=True).put("data/ab/pack", data)
    storage = retrying(make_space())
    space_proxy.add(
        Rule("error", method="GET", path=OBJECT, status=500),
        Rule("drop_mid", method="GET", path=OBJECT),
    )
    assert await storage.get("data/ab/pack") == data
    assert await storage.get("data/ab/pack", 1000, 5000) == data[1000:6000]
    assert space_proxy.count("GET", OBJECT) == 4


async def test_slow_answer_times_out_and_is_retried(make_space: SpaceFactory, space_proxy: FaultProxy) -> None:
    await make_space(direct=True).put("data/ab/pack", b"x" * 1000)
    storage = retrying(make_space(), timeout=0.5)
    space_proxy.add(Rule("delay", method="HEAD", path=OBJECT, delay=5.0))
    assert (await storage.stat("data/ab/pack")).size == 1000
    assert space_proxy.count("HEAD", OBJECT) == 2


async def test_listing_resumes_after_a_failed_page(make_space: SpaceFactory, space_proxy: FaultProxy) -> None:
    direct = make_space(direct=True)
    names = {f"index/i{i:03d}": i for i in range(25)}
    for name, size in names.items():
        await direct.put(name, b"i" * size)
    storage = retrying(make_space(list_page_size=10))
    # The second page fails once: the listing goes on where it was, without repeats.
    space_proxy.add(Rule("error", method="GET", path=r"/objects\?.*after=", status=503))
    found: dict[str, int] = {}
    async for info in storage.list("index/"):
        assert info.name not in found
        found[info.name] = info.size
    assert found == names
    assert space_proxy.count("GET", r"/objects\?") >= 4


async def test_refused_token_is_permanent_and_clear(make_space: SpaceFactory, space_proxy: FaultProxy) -> None:
    storage = retrying(make_space(token="tvs_not-a-token"))
    with pytest.raises(SpaceSignedOut) as excinfo:
        await storage.put("data/ab/pack", b"x")
    assert "signed out of Space" in str(excinfo.value)
    assert "tvs_not-a-token" not in str(excinfo.value)
    assert space_proxy.count("PUT", OBJECT) == 1  # never retried


async def test_no_token_fails_before_any_request(make_space: SpaceFactory, space_proxy: FaultProxy) -> None:
    storage = make_space(token=None)
    with pytest.raises(SpaceSignedOut, match="sign in to this Space first"):
        await storage.get("config")
    assert space_proxy.requests == []


def test_location_parsing() -> None:
    options = parse_space_location("space://space.example.org/docs?concurrency=8")
    assert options == SpaceOptions("space", "space.example.org", None, "docs", None, 8)
    assert options.base_url == "https://space.example.org"
    assert parse_space_location("space://h:8443/r").base_url == "https://h:8443"
    assert parse_space_location("space+http://127.0.0.1:7490/r").base_url == "http://127.0.0.1:7490"
    assert parse_space_location("space+http://[::1]:7490/r").location == "space+http://[::1]:7490/r"
    for bad, message in [
        ("space+http://example.org:80/r", "loopback"),
        ("space://user:pw@h/r", "credentials"),
        ("space://h/", "one repository"),
        ("space://h/a/b", "one repository"),
        ("space://h/r?token=x", "unknown"),
        ("space://h/r?concurrency=0", "concurrency"),
        ("space://h/a%20b", "invalid"),
    ]:
        with pytest.raises(LocationError, match=message):
            parse_space_location(bad)
