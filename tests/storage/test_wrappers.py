"""RetryingStorage, LimitedStorage and FaultyStorage around a real LocalStorage."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TypedDict, Unpack

import pytest

from tests.support.faulty_storage import Fault, FaultyStorage, transient
from timevault.core.storage import (
    InvalidObjectName,
    LimitedStorage,
    LocalStorage,
    ObjectNotFound,
    RetryingStorage,
    StorageError,
    TransientStorageError,
    delete_many,
)

pytestmark = pytest.mark.timeout(20)


class Sleeps:
    """Records backoff delays instead of sleeping them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path)


class RetryOptions(TypedDict, total=False):
    attempts: int
    base_delay: float
    max_delay: float
    timeout: float | None


def retrying(inner: FaultyStorage, sleeps: Sleeps, **kwargs: Unpack[RetryOptions]) -> RetryingStorage:
    options: RetryOptions = {"attempts": 4, "base_delay": 1.0, "max_delay": 3.0, **kwargs}
    return RetryingStorage(inner, sleep=sleeps, rng=lambda: 1.0, **options)


async def test_transient_failures_are_retried_with_capped_backoff(local: LocalStorage) -> None:
    faulty = FaultyStorage(local, [Fault("put", error=transient, times=3)])
    sleeps = Sleeps()
    await retrying(faulty, sleeps).put("data/ab/p", b"payload")
    faulty.assert_all_fired()
    assert faulty.calls["put"] == 4
    assert sleeps.delays == [1.0, 2.0, 3.0]  # base·2^n, capped at max_delay (rng at its top)
    assert await local.get("data/ab/p") == b"payload"


def test_backoff_is_full_jitter() -> None:
    values = iter([0.0, 0.5, 0.999])
    storage = RetryingStorage(
        LocalStorage("/nonexistent"), base_delay=0.2, max_delay=5.0, rng=lambda: next(values)
    )
    assert storage.backoff(1) == 0.0
    assert storage.backoff(4) == pytest.approx(0.5 * 1.6)
    assert storage.backoff(10) == pytest.approx(0.999 * 5.0)


async def test_exhausted_retries_raise_one_clear_error(local: LocalStorage) -> None:
    faulty = FaultyStorage(local, [Fault("get", error=transient, times=None)])
    sleeps = Sleeps()
    with pytest.raises(StorageError) as excinfo:
        await retrying(faulty, sleeps).get("index/i1")
    assert not isinstance(excinfo.value, TransientStorageError)
    assert str(excinfo.value) == (
        f"{local.location}: get index/i1: failed after 4 attempts: faulty: get index/i1: injected transient failure"
    )
    assert faulty.calls["get"] == 4
    assert len(sleeps.delays) == 3


@pytest.mark.parametrize(
    "error",
    [ObjectNotFound("gone"), InvalidObjectName("bad"), StorageError("access denied")],
    ids=["not-found", "invalid-name", "permanent"],
)
async def test_permanent_errors_are_not_retried(local: LocalStorage, error: StorageError) -> None:
    faulty = FaultyStorage(local, [Fault("stat", error=error, times=None)])
    sleeps = Sleeps()
    with pytest.raises(type(error)):
        await retrying(faulty, sleeps).stat("config")
    assert faulty.calls["stat"] == 1
    assert sleeps.delays == []


async def test_real_not_found_passes_straight_through(local: LocalStorage) -> None:
    faulty = FaultyStorage(local)
    with pytest.raises(ObjectNotFound):
        await retrying(faulty, Sleeps()).get("snapshots/none")
    assert faulty.calls["get"] == 1


async def test_lost_reply_after_write_is_harmless(local: LocalStorage) -> None:
    faulty = FaultyStorage(local, [Fault("put", error=transient, after=True)])
    await retrying(faulty, Sleeps()).put("index/i1", b"v1")
    faulty.assert_all_fired()
    assert faulty.calls["put"] == 2
    assert await local.get("index/i1") == b"v1"


async def test_hanging_call_is_cut_by_the_timeout(local: LocalStorage) -> None:
    await local.put("config", b"c")
    faulty = FaultyStorage(local, [Fault("get", delay=10.0)])
    storage = RetryingStorage(faulty, attempts=2, base_delay=0.0, max_delay=0.0, timeout=0.2)
    assert await storage.get("config") == b"c"
    faulty.assert_all_fired()
    faulty.add(Fault("get", delay=10.0, times=None))
    with pytest.raises(StorageError, match=r"get config: failed after 2 attempts: no answer within 0\.2 s"):
        await storage.get("config")


async def test_truncated_read_is_visible(local: LocalStorage) -> None:
    # FaultyStorage can hand back short data; the repository layer's checks must catch it.
    await local.put("data/ab/p", b"0123456789")
    faulty = FaultyStorage(local, [Fault("get", name=r"^data/", truncate=4)])
    assert await faulty.get("data/ab/p") == b"0123"
    assert await faulty.get("data/ab/p") == b"0123456789"
    faulty.assert_all_fired()


async def test_list_retry_skips_names_already_yielded(local: LocalStorage) -> None:
    for i in range(6):
        await local.put(f"keys/k{i}", b"k")
    faulty = FaultyStorage(local, [Fault("list", error=transient, after=True, truncate=3)])
    names = [info.name async for info in retrying(faulty, Sleeps()).list("keys/")]
    faulty.assert_all_fired()
    assert sorted(names) == [f"keys/k{i}" for i in range(6)]
    assert faulty.calls["list"] == 2


async def test_unfired_fault_is_reported(local: LocalStorage) -> None:
    faulty = FaultyStorage(local, [Fault("put", on_call=2, error=transient), Fault("delete", name="^locks/")])
    await faulty.put("config", b"c")  # call #1: the fault is for call #2
    await faulty.delete("keys/k1")
    with pytest.raises(AssertionError, match=r"put call #2; delete name ~ '\^locks/'"):
        faulty.assert_all_fired()
    with pytest.raises(TransientStorageError):
        await faulty.put("config", b"c")
    await faulty.delete("locks/l1")
    faulty.assert_all_fired()


async def test_limited_storage_bounds_concurrency(local: LocalStorage) -> None:
    faulty = FaultyStorage(local, [Fault("put", delay=0.02, times=None)])
    limited = LimitedStorage(faulty, 3)
    await asyncio.gather(*(limited.put(f"data/aa/p{i}", b"x") for i in range(20)))
    assert limited.peak == 3
    assert len([info async for info in limited.list()]) == 20


async def test_limited_list_does_not_hold_a_slot_between_items(local: LocalStorage) -> None:
    for i in range(3):
        await local.put(f"index/i{i}", bytes([i]))
    limited = LimitedStorage(local, 1)

    async def read_while_listing() -> list[bytes]:
        return [await limited.get(info.name) async for info in limited.list("index/")]

    assert sorted(await asyncio.wait_for(read_while_listing(), 5)) == [b"\x00", b"\x01", b"\x02"]


async def test_delete_many_falls_back_to_single_deletes(local: LocalStorage) -> None:
    names = [f"data/{i:02x}/p" for i in range(30)]
    for name in names:
        await local.put(name, b"p")
    faulty = FaultyStorage(local, [Fault("delete", error=transient, name="data/07/p")])
    await delete_many(LimitedStorage(retrying(faulty, Sleeps()), 4), [*names, "data/ff/missing"])
    faulty.assert_all_fired()
    assert faulty.calls["delete"] == 32
    assert [info async for info in local.list()] == []


def test_wrapper_arguments_are_checked(local: LocalStorage) -> None:
    with pytest.raises(ValueError):
        RetryingStorage(local, attempts=0)
    with pytest.raises(ValueError):
        RetryingStorage(local, base_delay=2.0, max_delay=1.0)
    with pytest.raises(ValueError):
        LimitedStorage(local, 0)
    assert RetryingStorage(local).location == LimitedStorage(local, 2).location == local.location


async def test_delete_many_reports_one_plain_error(local: LocalStorage) -> None:
    names = [f"locks/l{i}" for i in range(5)]
    faulty = FaultyStorage(local, [Fault("delete", error=StorageError("denied"), name="l3$")])
    with pytest.raises(StorageError, match=r"^denied$"):
        await delete_many(faulty, names)
    faulty.assert_all_fired()
