"""The storage contract, run against every location (local folder, S3 on moto, wrapped S3).

A new location passes this suite or it is not a location. S3 always means a real moto HTTP
server here, never a mocked client.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.storage.conftest import StorageFactory
from timevault.core.buffers import BytesLike
from timevault.core.storage import (
    InvalidObjectName,
    InvalidRange,
    LimitedStorage,
    LocalStorage,
    ObjectInfo,
    ObjectNotFound,
    RetryingStorage,
    Storage,
    delete_many,
)

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024

INVALID_NAMES = [
    "",
    "config\n",
    "/abs",
    "a/../b",
    "..",
    ".",
    "a//b",
    "a/",
    "a b",
    "a\\b",
    "data/\x00",
    "ü",
    "a/./b",
]


async def listed(storage: Storage, prefix: str = "") -> dict[str, int]:
    result: dict[str, int] = {}
    async for info in storage.list(prefix):
        assert info.name not in result, f"{info.name} listed twice"
        result[info.name] = info.size
    return result


async def put_all(storage: Storage, items: dict[str, bytes], concurrency: int = 32) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str, data: bytes) -> None:
        async with gate:
            await storage.put(name, data)

    await asyncio.gather(*(one(name, data) for name, data in items.items()))


async def test_round_trip(storage: Storage) -> None:
    data = os.urandom(100_000)
    await storage.put("data/ab/pack1", data)
    assert await storage.get("data/ab/pack1") == data
    assert await storage.stat("data/ab/pack1") == ObjectInfo("data/ab/pack1", len(data))


async def test_put_of_parts_stores_their_concatenation(storage: Storage) -> None:
    parts: list[BytesLike] = [os.urandom(70_000), b"", bytearray(os.urandom(5)), memoryview(os.urandom(3000))[100:]]
    await storage.put("data/cd/parts", parts)
    expected = b"".join(parts)
    assert await storage.get("data/cd/parts") == expected
    assert (await storage.stat("data/cd/parts")).size == len(expected)


@given(sizes=st.lists(st.integers(0, 5000), max_size=40))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_local_gathered_write_matches_joined_bytes(tmp_path_factory: pytest.TempPathFactory, sizes: list[int]) -> None:
    # Many parts (more than one writev call can take on some systems) in any sizes, empty included.
    storage = LocalStorage(tmp_path_factory.mktemp("parts"))
    parts = [os.urandom(size) for size in sizes] * 30
    await storage.put("data/ef/many", parts)
    assert await storage.get("data/ef/many") == b"".join(parts)


async def test_empty_object(storage: Storage) -> None:
    await storage.put("config", b"")
    assert await storage.get("config") == b""
    assert await storage.get("config", 0, 10) == b""
    assert (await storage.stat("config")).size == 0
    assert await listed(storage) == {"config": 0}


async def test_overwrite_replaces_whole_object(storage: Storage) -> None:
    await storage.put("config", b"first version, rather long")
    await storage.put("config", b"second")
    assert await storage.get("config") == b"second"
    assert (await storage.stat("config")).size == 6
    await storage.put("config", b"second")  # a repeated delivery is harmless
    assert await storage.get("config") == b"second"


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, None),
        (0, 1),
        (10, 20),
        (990, None),
        (990, 10),
        (995, 100),  # runs past the end: fewer bytes
        (999, 1),
        (1000, None),  # exactly at the end
        (1000, 5),
        (5000, 10),  # far past the end
        (5000, None),
        (17, 0),
    ],
)
async def test_range_reads(storage: Storage, offset: int, length: int | None) -> None:
    data = bytes(range(256)) * 3 + os.urandom(232)
    assert len(data) == 1000
    await storage.put("index/r", data)
    end = None if length is None else offset + length
    assert await storage.get("index/r", offset, length) == data[offset:end]


@pytest.mark.parametrize(("offset", "length"), [(-1, None), (0, -1), (-5, 3)])
async def test_invalid_range_rejected(storage: Storage, offset: int, length: int | None) -> None:
    await storage.put("index/r", b"0123456789")
    with pytest.raises(InvalidRange):
        await storage.get("index/r", offset, length)


async def test_missing_object(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound) as excinfo:
        await storage.get("snapshots/missing")
    assert "snapshots/missing" in str(excinfo.value)
    assert storage.location in str(excinfo.value)
    with pytest.raises(ObjectNotFound):
        await storage.get("snapshots/missing", 5, 10)
    with pytest.raises(ObjectNotFound):
        await storage.get("snapshots/missing", 0, 0)
    with pytest.raises(ObjectNotFound):
        await storage.stat("snapshots/missing")


async def test_folder_is_not_an_object(storage: Storage) -> None:
    await storage.put("data/ab/pack", b"x")
    with pytest.raises(ObjectNotFound):
        await storage.stat("data/ab")
    with pytest.raises(ObjectNotFound):
        await storage.get("data/ab")
    with pytest.raises(ObjectNotFound):
        await storage.get("data/ab/pack/deeper")
    await storage.delete("data/ab")  # nothing to delete, no error
    assert await storage.get("data/ab/pack") == b"x"


async def test_delete_is_idempotent(storage: Storage) -> None:
    await storage.delete("locks/never-existed")
    await storage.put("locks/l1", b"lock")
    await storage.put("locks/l2", b"other")
    await storage.delete("locks/l1")
    await storage.delete("locks/l1")
    with pytest.raises(ObjectNotFound):
        await storage.get("locks/l1")
    with pytest.raises(ObjectNotFound):
        await storage.stat("locks/l1")
    assert await listed(storage) == {"locks/l2": 5}


@pytest.mark.parametrize("name", INVALID_NAMES)
async def test_invalid_names_rejected(storage: Storage, name: str) -> None:
    with pytest.raises(InvalidObjectName):
        await storage.put(name, b"x")
    with pytest.raises(InvalidObjectName):
        await storage.get(name)
    with pytest.raises(InvalidObjectName):
        await storage.stat(name)
    with pytest.raises(InvalidObjectName):
        await storage.delete(name)
    with pytest.raises(InvalidObjectName):
        await delete_many(storage, ["ok", name])
    assert await listed(storage) == {}


async def test_list_with_prefix(storage: Storage) -> None:
    objects = {
        "config": b"c",
        "keys/k1": b"kk",
        "data/aa/p1": b"111",
        "data/ab/p2": b"2222",
        "data/ba/p3": b"33333",
        "index/i1": b"i",
    }
    await put_all(storage, objects)
    everything = {name: len(data) for name, data in objects.items()}
    assert await listed(storage) == everything
    assert await listed(storage, "data/") == {n: s for n, s in everything.items() if n.startswith("data/")}
    assert await listed(storage, "data/a") == {"data/aa/p1": 3, "data/ab/p2": 4}
    assert await listed(storage, "keys/k1") == {"keys/k1": 2}
    assert await listed(storage, "snapshots/") == {}
    assert await listed(storage, "conf") == {"config": 1}


async def test_list_paginates_and_batch_delete(storage: Storage) -> None:
    if isinstance(storage, LimitedStorage):
        # 1000 more puts would prove nothing new: the wrappers pass pages through (their list is
        # tested page by page in test_s3_faults and test_space_faults).
        pytest.skip("same pagination as the unwrapped case of this location")
    # More than one ListObjectsV2 page (1000 keys) and more than one DeleteObjects batch.
    count = 1001
    objects = {f"data/{i % 7:02x}/obj-{i:05d}": i.to_bytes(2, "big") for i in range(count)}
    objects["config"] = b"keep me"
    await put_all(storage, objects, concurrency=16)
    found = await listed(storage)
    assert found == {name: len(data) for name, data in objects.items()}
    assert len(await listed(storage, "data/")) == count
    await delete_many(storage, [n for n in objects if n.startswith("data/")] + ["data/00/not-there"])
    assert await listed(storage) == {"config": 7}


async def test_large_object_multipart(storage: Storage) -> None:
    # Above the 32 MiB multipart threshold on S3: several 8 MiB parts.
    data = os.urandom(34 * MiB + 12345)
    await storage.put("data/ff/big", data)
    assert (await storage.stat("data/ff/big")).size == len(data)
    assert await storage.get("data/ff/big") == data
    boundary = 8 * MiB
    assert await storage.get("data/ff/big", boundary - 100, 200) == data[boundary - 100 : boundary + 100]
    assert await storage.get("data/ff/big", len(data) - 10) == data[-10:]


async def test_concurrent_puts_of_same_name_are_atomic(storage: Storage) -> None:
    versions = [bytes([i]) * (256 * 1024 + i) for i in range(8)]
    # moto's in-memory store sometimes answers 500 to one of several racing writers of a key
    # (it closes the replaced object's buffer under the other request); retrying is what any
    # caller does with a 500, and the assertion below is about what the store ends up holding.
    writer = RetryingStorage(storage, base_delay=0.01, max_delay=0.05)
    await asyncio.gather(*(writer.put("index/same", v) for v in versions))
    final = await storage.get("index/same")
    assert final in versions  # one writer's whole object, never a mix or a part
    assert (await storage.stat("index/same")).size == len(final)
    assert await listed(storage) == {"index/same": len(final)}


async def test_put_once_never_replaces_an_object(storage: Storage) -> None:
    """Objects of a repository are written once: where the location enforces it (exclusive
    create, conditional put), `put_new` of a taken name changes nothing and says so."""
    from timevault.core.storage.once import put_once, supports_put_new

    assert supports_put_new(storage)  # every location here enforces it, wrappers included
    assert await storage.put_new("snapshots/one", b"first")  # type: ignore[attr-defined]
    assert not await storage.put_new("snapshots/one", b"second version")  # type: ignore[attr-defined]
    assert await storage.get("snapshots/one") == b"first"
    assert not await put_once(storage, "snapshots/one", b"third")
    assert await put_once(storage, "snapshots/two", [b"pa", b"rts"])
    assert await storage.get("snapshots/two") == b"parts"
    assert await listed(storage) == {"snapshots/one": 5, "snapshots/two": 5}  # no temp file left
    writer = RetryingStorage(storage, base_delay=0.01, max_delay=0.05)
    results = await asyncio.gather(*(writer.put_new("index/race", bytes([i]) * 1000) for i in range(6)))
    assert results.count(True) == 1  # exactly one racing writer created it
    assert (await storage.get("index/race")) == bytes([results.index(True)]) * 1000


async def test_close_is_idempotent_and_data_survives(make_storage: StorageFactory) -> None:
    first = make_storage()
    await first.put("snapshots/s1", b"manifest")
    await first.close()
    await first.close()
    second = make_storage()
    assert second.location == first.location
    assert await second.get("snapshots/s1") == b"manifest"


_name_segment = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1
)
valid_names = st.lists(_name_segment.filter(lambda s: s not in (".", "..")), min_size=1, max_size=4).map(
    "/".join
)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(name=valid_names, data=st.binary(max_size=2048))
async def test_round_trip_arbitrary_bytes(storage: Storage, name: str, data: bytes) -> None:
    # A fresh folder per example: a generated "a" and "a/b" must not meet as file and folder.
    full = f"prop/{uuid.uuid4().hex}/{name}"
    await storage.put(full, data)
    assert await storage.get(full) == data
    assert (await storage.stat(full)).size == len(data)
    half = len(data) // 2
    assert await storage.get(full, half) == data[half:]
    await storage.delete(full)
    with pytest.raises(ObjectNotFound):
        await storage.stat(full)
