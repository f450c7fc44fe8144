"""Raw put/get throughput of S3Storage (on a local moto server) against LocalStorage.

Run by hand, not in the test suite::

    .venv/bin/python bench/bench_s3.py [--objects 16] [--size-mib 16] [--concurrency 1 4]

Objects are 16 MiB by default, the repository's pack size. moto is an in-memory Python
server, so the S3 numbers measure the client path (signing, MD5, HTTP, copies) plus moto's
own overhead; they are a floor for regressions, not a prediction of AWS throughput.
The functions are importable so that later benchmarks (full backup/restore vs restic) can
reuse `start_moto_server` and `measure`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.moto_server import DUMMY_AWS_ENV, create_bucket, start_moto_server
from timevault.core.storage import LimitedStorage, LocalStorage, Storage, open_location
from timevault.core.storage.s3 import S3Options, S3Storage

MiB = 1024 * 1024


@dataclass(frozen=True)
class Result:
    backend: str
    concurrency: int
    put_mib_s: float
    get_mib_s: float


async def _timed(jobs: list[Callable[[], Awaitable[object]]], concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[object]]) -> None:
        async with gate:
            await job()

    started = time.perf_counter()
    await asyncio.gather(*(run(job) for job in jobs))
    return time.perf_counter() - started


async def measure(
    backend: str, storage: Storage, payloads: list[bytes], concurrency: int, prefix: str
) -> Result:
    """Put then get every payload, `concurrency` at a time; return MiB/s for each phase."""
    names = [f"{prefix}/data/{i:02x}/pack-{i:04d}" for i in range(len(payloads))]
    total_mib = sum(len(p) for p in payloads) / MiB
    put_s = await _timed(
        [functools.partial(storage.put, n, p) for n, p in zip(names, payloads, strict=True)], concurrency
    )
    got: list[bytes] = []

    async def fetch(name: str) -> None:
        got.append(await storage.get(name))

    get_s = await _timed([functools.partial(fetch, n) for n in names], concurrency)
    if sorted(len(g) for g in got) != sorted(len(p) for p in payloads):
        raise RuntimeError(f"{backend}: read back the wrong sizes")
    for name in names:
        await storage.delete(name)
    return Result(backend, concurrency, total_mib / put_s, total_mib / get_s)


async def run(objects: int, size_mib: int, concurrencies: list[int]) -> list[Result]:
    os.environ.update(DUMMY_AWS_ENV)
    payloads = [os.urandom(size_mib * MiB) for _ in range(objects)]
    results: list[Result] = []
    endpoint, stop = start_moto_server()
    try:
        await create_bucket(endpoint, "bench")
        with tempfile.TemporaryDirectory(prefix="tv-bench-") as folder:
            for concurrency in concurrencies:
                local = LocalStorage(folder)
                results.append(await measure("local folder", local, payloads, concurrency, f"c{concurrency}"))
                s3 = S3Storage(S3Options("bench", "raw", endpoint=endpoint, path_style=True))
                try:
                    results.append(await measure("S3Storage", s3, payloads, concurrency, f"c{concurrency}"))
                finally:
                    await s3.close()
                wrapped = open_location(
                    f"s3://bench/wrapped?endpoint={endpoint}&path_style=true&concurrency={concurrency}"
                )
                assert isinstance(wrapped, LimitedStorage)
                try:
                    results.append(
                        await measure("open_location(s3)", wrapped, payloads, concurrency, f"c{concurrency}")
                    )
                finally:
                    await wrapped.close()
    finally:
        stop()
    return results


def print_table(results: list[Result], objects: int, size_mib: int) -> None:
    print(f"{objects} objects of {size_mib} MiB each (moto S3 server on loopback)")
    print(f"{'backend':<20} {'concurrency':>11} {'put MiB/s':>10} {'get MiB/s':>10}")
    for r in results:
        print(f"{r.backend:<20} {r.concurrency:>11} {r.put_mib_s:>10.1f} {r.get_mib_s:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=16)
    parser.add_argument("--size-mib", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    results = asyncio.run(run(args.objects, args.size_mib, args.concurrency))
    print_table(results, args.objects, args.size_mib)


if __name__ == "__main__":
    main()
