"""S3 behind a misbehaving network: a fault proxy between the client and a real moto server.

Transient faults (500, 503 SlowDown, slow answers, dropped connections) must be absorbed by
RetryingStorage with the data intact; permanent ones must end in one clear StorageError that
names the location and the operation, after a bounded number of attempts.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from typing import TypedDict, Unpack

import pytest
from aiobotocore.session import get_session

from tests.storage.conftest import unique_prefix
from tests.storage.fault_proxy import FaultProxy, Rule
from timevault.core.storage import RetryingStorage, StorageError, TransientStorageError, delete_many
from timevault.core.storage.s3 import MiB, S3Options, S3Storage

pytestmark = [pytest.mark.s3, pytest.mark.timeout(30)]

ATTEMPTS = 3
OBJECT = "/data/ab/pack"  # the path a request for object data/ab/pack ends with

S3Factory = Callable[..., S3Storage]


class S3Tuning(TypedDict, total=False):
    """`S3Storage`'s keyword options that tests change."""

    read_timeout: float
    multipart_threshold: int
    part_size: int
    list_page_size: int


@pytest.fixture
async def make_s3(moto_endpoint: str, s3_bucket: str, fault_proxy: FaultProxy) -> AsyncIterator[S3Factory]:
    """Opens S3Storage on one fresh prefix, through the proxy or (direct=True) straight to moto."""
    prefix = unique_prefix()
    opened: list[S3Storage] = []

    def make(*, direct: bool = False, **kwargs: Unpack[S3Tuning]) -> S3Storage:
        endpoint = moto_endpoint if direct else fault_proxy.url
        storage = S3Storage(S3Options(s3_bucket, prefix, endpoint=endpoint, path_style=True), **kwargs)
        opened.append(storage)
        return storage

    yield make
    for storage in opened:
        await storage.close()


def retrying(inner: S3Storage, timeout: float = 5.0) -> RetryingStorage:
    return RetryingStorage(inner, attempts=ATTEMPTS, base_delay=0.01, max_delay=0.05, timeout=timeout)


async def test_error_message_names_location_and_operation(
    make_s3: S3Factory, fault_proxy: FaultProxy
) -> None:
    s3 = make_s3()
    fault_proxy.add(Rule("error", method="PUT", status=503, code="SlowDown"))
    with pytest.raises(TransientStorageError) as excinfo:
        await s3.put("data/ab/pack", b"payload")
    assert str(excinfo.value).startswith(f"{s3.location}: put data/ab/pack: 503 SlowDown")
    assert fault_proxy.count("PUT", OBJECT) == 1  # no hidden retries inside botocore


async def test_put_survives_throttling_and_drops(make_s3: S3Factory, fault_proxy: FaultProxy) -> None:
    storage = retrying(make_s3())
    data = os.urandom(300_000)
    fault_proxy.add(
        Rule("error", method="PUT", path=OBJECT, status=503, code="SlowDown"),
        Rule("drop_before", method="PUT", path=OBJECT),
    )
    await storage.put("data/ab/pack", data)
    assert fault_proxy.count("PUT", OBJECT) == 3
    assert await make_s3(direct=True).get("data/ab/pack") == data


async def test_get_survives_500_and_connection_cut_mid_body(
    make_s3: S3Factory, fault_proxy: FaultProxy
) -> None:
    data = os.urandom(1 * MiB)
    await make_s3(direct=True).put("data/ab/pack", data)
    storage = retrying(make_s3())
    fault_proxy.add(
        Rule("drop_mid", method="GET", path=OBJECT),
        Rule("error", method="GET", path=OBJECT, status=500, code="InternalError"),
    )
    assert await storage.get("data/ab/pack") == data
    assert fault_proxy.count("GET", OBJECT) == 3
    fault_proxy.add(Rule("drop_mid", method="GET", path=OBJECT))
    assert await storage.get("data/ab/pack", 1000, 5000) == data[1000:6000]


async def test_stat_and_delete_survive_faults(make_s3: S3Factory, fault_proxy: FaultProxy) -> None:
    await make_s3(direct=True).put("data/ab/pack", b"12345")
    storage = retrying(make_s3())
    fault_proxy.add(
        Rule("error", method="HEAD", path=OBJECT, status=503, code="SlowDown"),
        Rule("error", method="DELETE", path=OBJECT, status=500, code="InternalError"),
        Rule("drop_before", method="DELETE", path=OBJECT),
    )
    assert (await storage.stat("data/ab/pack")).size == 5
    await storage.delete("data/ab/pack")
    assert fault_proxy.count("DELETE", OBJECT) == 3
    assert [info async for info in make_s3(direct=True).list()] == []


async def test_batch_delete_survives_faults(make_s3: S3Factory, fault_proxy: FaultProxy) -> None:
    direct = make_s3(direct=True)
    names = [f"index/i{i}" for i in range(20)]
    for name in names:
        await direct.put(name, b"x")
    fault_proxy.add(Rule("error", method="POST", path=r"\?delete", status=503, code="SlowDown"))
    await delete_many(retrying(make_s3()), names)
    assert fault_proxy.count("POST", r"\?delete") == 2
    assert [info async for info in direct.list()] == []


async def test_list_restarts_after_a_failed_page_without_duplicates(
    make_s3: S3Factory, fault_proxy: FaultProxy
) -> None:
    direct = make_s3(direct=True)
    names = {f"snapshots/s{i:02d}" for i in range(25)}
    for name in names:
        await direct.put(name, b"m")
    storage = retrying(make_s3(list_page_size=10))
    # The second page fails twice: once with SlowDown, once with the connection cut mid-body.
    fault_proxy.add(
        Rule("error", method="GET", path=r"list-type=2.*continuation-token", code="SlowDown"),
        Rule("drop_mid", method="GET", path=r"list-type=2.*continuation-token"),
    )
    listed = [info.name async for info in storage.list("snapshots/")]
    assert sorted(listed) == sorted(names)  # complete, and no name twice
    assert all(rule.fired == 1 for rule in fault_proxy.rules)


async def test_slow_answer_hits_the_per_call_timeout_and_is_retried(
    make_s3: S3Factory, fault_proxy: FaultProxy
) -> None:
    await make_s3(direct=True).put("data/ab/pack", b"late")
    storage = retrying(make_s3(), timeout=0.5)
    fault_proxy.add(Rule("delay", method="GET", path=OBJECT, delay=3.0))
    started = time.monotonic()
    assert await storage.get("data/ab/pack") == b"late"
    assert time.monotonic() - started < 2.5
    assert fault_proxy.count("GET", OBJECT) == 2


async def test_client_read_timeout_is_transient(make_s3: S3Factory, fault_proxy: FaultProxy) -> None:
    await make_s3(direct=True).put("data/ab/pack", b"late")
    s3 = make_s3(read_timeout=0.3)
    fault_proxy.add(Rule("delay", method="GET", path=OBJECT, delay=2.0))
    with pytest.raises(TransientStorageError) as excinfo:
        await s3.get("data/ab/pack")
    assert str(excinfo.value).startswith(f"{s3.location}: get data/ab/pack: ")
    assert "Timeout" in str(excinfo.value)


async def test_permanent_throttling_gives_up_after_bounded_attempts(
    make_s3: S3Factory, fault_proxy: FaultProxy
) -> None:
    storage = retrying(make_s3())
    fault_proxy.add(Rule("error", method="PUT", path=OBJECT, status=503, code="SlowDown", times=None))
    with pytest.raises(StorageError) as excinfo:
        await storage.put("data/ab/pack", b"never stored")
    error = excinfo.value
    assert not isinstance(error, TransientStorageError)  # outer layers must not retry again
    assert str(error) == (
        f"{storage.location}: put data/ab/pack: failed after {ATTEMPTS} attempts: "
        "503 SlowDown: injected by the fault proxy"
    )
    assert isinstance(error.__cause__, TransientStorageError)
    assert fault_proxy.count("PUT", OBJECT) == ATTEMPTS


async def test_permanent_list_failure_is_bounded(make_s3: S3Factory, fault_proxy: FaultProxy) -> None:
    storage = retrying(make_s3())
    fault_proxy.add(
        Rule("error", method="GET", path="list-type=2", status=500, code="InternalError", times=None)
    )
    with pytest.raises(StorageError, match=r": list index/: failed after 3 attempts: 500 InternalError"):
        _ = [info async for info in storage.list("index/")]
    assert fault_proxy.count("GET", "list-type=2") == ATTEMPTS


async def test_access_denied_is_not_retried(make_s3: S3Factory, fault_proxy: FaultProxy) -> None:
    storage = retrying(make_s3())
    fault_proxy.add(Rule("error", method="GET", path=OBJECT, status=403, code="AccessDenied", times=None))
    with pytest.raises(StorageError) as excinfo:
        await storage.get("data/ab/pack")
    assert str(excinfo.value).startswith(f"{storage.location}: get data/ab/pack: 403 AccessDenied")
    assert fault_proxy.count("GET", OBJECT) == 1


async def test_multipart_put_retried_and_failed_upload_aborted(
    moto_endpoint: str, s3_bucket: str, make_s3: S3Factory, fault_proxy: FaultProxy
) -> None:
    # Small thresholds so three 5 MiB parts cost little.
    s3 = make_s3(multipart_threshold=6 * MiB, part_size=5 * MiB)
    storage = retrying(s3)
    data = os.urandom(12 * MiB)
    fault_proxy.add(Rule("error", method="PUT", path=r"partNumber=2", status=500, code="InternalError"))
    await storage.put("data/ab/pack", data)
    assert fault_proxy.count("POST", r"\?uploads") == 2  # the whole put was retried once
    assert fault_proxy.count("DELETE", r"uploadId=") == 1  # and the broken upload aborted
    assert await make_s3(direct=True).get("data/ab/pack") == data
    async with get_session().create_client("s3", endpoint_url=moto_endpoint) as client:
        uploads = await client.list_multipart_uploads(Bucket=s3_bucket, Prefix=s3.options.prefix)
    assert uploads.get("Uploads", []) == []
