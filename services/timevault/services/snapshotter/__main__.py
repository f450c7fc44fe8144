"""``python -m timevault.services.snapshotter --nats URL``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from nats.aio.client import Client as NATS

from timevault.services.common.paths import default_data_dir
from timevault.services.common.runner import add_stream_replicas, base_parser, run_service
from timevault.services.snapshotter.folders import FolderService, default_roots
from timevault.services.snapshotter.remote import MAX_IN_FLIGHT
from timevault.services.snapshotter.service import Snapshotter
from timevault.services.snapshotter.space import RESERVE


def parser() -> argparse.ArgumentParser:
    p = base_parser("snapshotter", "TimeVault snapshotter: runs backup jobs from the work queue.")
    p.add_argument("--concurrency", type=int, default=1, help="jobs this copy runs at once")
    p.add_argument("--ack-wait", type=float, default=30.0,
                   help="seconds without in_progress before a job is redelivered to another copy")
    p.add_argument("--data-dir", default=os.environ.get("TIMEVAULT_DATA_DIR") or str(default_data_dir()))
    p.add_argument("--max-in-flight", type=int, default=MAX_IN_FLIGHT,
                   help="unconfirmed bytes per job before waiting for the uploader")
    p.add_argument("--root", action="append", metavar="PATH",
                   help="a folder whose subfolders the folder picker may show (repeatable; default: "
                        "your home, /home, /mnt, /media, /srv, /data where they exist)")
    add_stream_replicas(p)
    p.add_argument("--reserve", type=int, default=int(os.environ.get("TIMEVAULT_RESERVE_BYTES") or RESERVE),
                   help="bytes a backup leaves free on a local location's disk (it fails before starting, or "
                   "thins the oldest snapshots when the plan says so, if it would not)")
    return p


async def main(args: argparse.Namespace, nc: NATS, stack: contextlib.AsyncExitStack,
               stop: asyncio.Event) -> None:
    snapshotter = Snapshotter(nc, concurrency=args.concurrency, ack_wait=args.ack_wait,
                              cache_dir=os.path.join(args.data_dir, "cache"), max_in_flight=args.max_in_flight,
                              instance=args.instance, stream_replicas=args.stream_replicas,
                              reserve=args.reserve)
    folders = FolderService(nc, args.root or default_roots())
    await folders.start()
    task = asyncio.create_task(snapshotter.run(stop))

    async def finish() -> None:
        stop.set()
        await task

    stack.push_async_callback(finish)


if __name__ == "__main__":
    run_service("snapshotter", parser(), main)
