#!/usr/bin/env python3
"""How much one catalog sustains: plans, jobs and chunk lookups per second, over real NATS.

Starts a private nats-server and one catalog process (``python -m timevault.services.catalog``),
then drives it from this process with several requests in flight (``--concurrency``):

* **plans**: ``tv.catalog.plan.create`` (each initialises a local repository and derives keys;
  ``--kdf-n`` sets the scrypt cost, the default is the core's), then ``tv.catalog.plan.get``.
* **jobs**: the whole life of a backup job as the services drive it: create, claim, finish
  with a snapshot (three requests, three SQLite transactions, the JetStream work item).
* **chunks**: ``tv.catalog.chunks.add`` of `--chunks` ids in batches of 1000, then
  ``tv.catalog.chunks.lookup`` in batches of 256 (the snapshotter's batch size): lookups/s and ids/s.

The machine is shared; the load average before and after is printed with the figures.

    .venv/bin/python bench/bench_catalog.py
    .venv/bin/python bench/bench_catalog.py --plans 50 --jobs 500 --chunks 200000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from timevault.proto import subjects
from timevault.proto.chunks import ChunkAdd, ChunkAddReply, ChunkLookup, ChunkLookupReply, ChunkRef
from timevault.proto.jobs import Job, JobClaim, JobCreate, JobFinish
from timevault.proto.plans import (
    Location,
    Plan,
    PlanCreate,
    PlanDetail,
    PlanList,
    PlanListRequest,
    PlanRef,
    Schedule,
    SnapshotInfo,
)
from timevault.services.common import rpc
from timevault.services.common.natsd import NatsServer

PASSWORD = "bench password"


async def rate(count: int, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> float:
    """Operations per second for `count` calls of `one(i)`, `concurrency` at a time."""
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


def start_catalog(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)


async def bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    server = NatsServer(root / "nats")
    server.start()
    cmd = [sys.executable, "-m", "timevault.services.catalog", "--nats", server.url, "--db", str(root / "catalog.db"),
           "--log-level", "WARNING"]
    if args.kdf_n:
        cmd += ["--kdf-n", str(args.kdf_n)]
    catalog = start_catalog(cmd, root / "catalog.log")
    nc: NATS = await nats.connect(server.url)
    figures: dict[str, Any] = {"load_before": os.getloadavg()}
    try:
        await rpc.request_retrying(nc, subjects.PLAN_LIST, PlanListRequest(), PlanList, timeout=1, give_up_after=30)
        c = args.concurrency

        def plan_create(i: int) -> Awaitable[Plan]:
            (root / "src").mkdir(exist_ok=True)
            req = PlanCreate(name=f"bench-{i}", sources=[str(root / "src")], password=PASSWORD, password_confirm=PASSWORD,
                             schedule=Schedule(frequency="daily", time="03:00"),
                             location=Location(type="local", path=str(root / "repos" / str(i))))
            return rpc.request(nc, subjects.PLAN_CREATE, req, Plan, timeout=120)

        figures["plan_create_per_s"] = await rate(args.plans, c, plan_create)
        plans = (await rpc.request(nc, subjects.PLAN_LIST, PlanListRequest(), PlanList)).plans
        ids = [p.id for p in plans]
        figures["plan_get_per_s"] = await rate(args.plans * 20, c, lambda i: rpc.request(
            nc, subjects.PLAN_GET, PlanRef(plan=ids[i % len(ids)]), PlanDetail))

        async def job_cycle(i: int) -> None:
            plan = ids[i % len(ids)]  # one active backup per plan: consecutive jobs use other plans
            job = await rpc.request(nc, subjects.JOB_CREATE, JobCreate(plan=plan), Job)
            worker = f"bench-{i % c}"
            await rpc.request(nc, subjects.JOB_CLAIM, JobClaim(job_id=job.id, worker=worker), Job)
            now = datetime.now(UTC)
            snapshot = SnapshotInfo(id=secrets.token_hex(32), started_at=now, finished_at=now, size=1, files=1)
            await rpc.request(nc, subjects.JOB_FINISH, JobFinish(job_id=job.id, worker=worker, status="completed",
                                                                 snapshot=snapshot), Job)

        jobs_concurrency = min(c, len(ids))
        figures["job_cycles_per_s"] = await rate(args.jobs, jobs_concurrency, job_cycle)
        figures["job_requests_per_s"] = figures["job_cycles_per_s"] * 3

        chunk_ids = [secrets.token_hex(32) for _ in range(args.chunks)]
        plan = ids[0]

        def add(i: int) -> Awaitable[ChunkAddReply]:
            batch = chunk_ids[i * 1000:(i + 1) * 1000]
            return rpc.request(nc, subjects.CHUNKS_ADD, ChunkAdd(plan_id=plan, chunks=[
                ChunkRef(id=x, pack="p" * 64, length=4096) for x in batch]), ChunkAddReply, timeout=60)

        batches = (args.chunks + 999) // 1000
        figures["chunk_add_ids_per_s"] = await rate(batches, c, add) * 1000
        mixed = chunk_ids[: args.chunks // 2] + [secrets.token_hex(32) for _ in range(args.chunks // 2)]

        def lookup(i: int) -> Awaitable[ChunkLookupReply]:
            start = (i * 256) % max(1, len(mixed) - 256)
            return rpc.request(nc, subjects.CHUNKS_LOOKUP, ChunkLookup(plan_id=plan, ids=mixed[start:start + 256]),
                               ChunkLookupReply, timeout=60)

        lookups = args.lookups
        figures["chunk_lookups_per_s"] = await rate(lookups, c, lookup)
        figures["chunk_lookup_ids_per_s"] = figures["chunk_lookups_per_s"] * 256
    finally:
        figures["load_after"] = os.getloadavg()
        await nc.close()
        catalog.terminate()
        catalog.wait(10)
        server.stop()
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plans", type=int, default=20)
    p.add_argument("--jobs", type=int, default=300)
    p.add_argument("--chunks", type=int, default=100_000)
    p.add_argument("--lookups", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--kdf-n", type=int, default=None, help="scrypt cost for plan creation (default: the core's)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tv-bench-catalog-") as tmp:
        figures = asyncio.run(bench(args, Path(tmp)))
    figures["cpus"] = os.cpu_count()
    for key, value in figures.items():
        print(f"{key:24} {value:.1f}" if isinstance(value, float) else f"{key:24} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
