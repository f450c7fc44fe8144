"""``python -m timevault.services.catalog --nats URL [--db PATH | --data-dir DIR]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from nats.aio.client import Client as NATS

from timevault.proto.plans import validate_notify
from timevault.services.catalog.context import CatalogOptions
from timevault.services.catalog.db import CatalogDB
from timevault.services.catalog.notify import NotifyConfig
from timevault.services.catalog.service import CatalogService
from timevault.services.common.paths import default_data_dir
from timevault.services.common.runner import add_stream_replicas, base_parser, run_service


def parser() -> argparse.ArgumentParser:
    p = base_parser("catalog", "TimeVault catalog: the only writer of metadata.")
    p.add_argument("--data-dir", default=os.environ.get("TIMEVAULT_DATA_DIR") or str(default_data_dir()))
    p.add_argument("--db", help="SQLite file (default: <data-dir>/catalog.db)")
    p.add_argument("--job-timeout", type=float, default=60.0,
                   help="fail a running job after this many seconds without heartbeat")
    p.add_argument("--pending-timeout", type=float, default=3600.0)
    p.add_argument("--delete-wait", type=float, default=60.0)
    p.add_argument("--reap-every", type=float, default=2.0)
    add_stream_replicas(p)
    # Tests only: cheap key derivation for new repositories (--kdf-n N is the older spelling).
    p.add_argument("--test-weak-kdf", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kdf-n", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--notify", action="append", default=[], metavar="URL",
                   help="also send every plan's notifications here (repeatable)")
    p.add_argument("--notify-attempts", type=int, default=5, help="tries per notification URL")
    p.add_argument("--notify-backoff", type=float, default=2.0, help="seconds before the first retry (doubled each time)")
    return p


async def main(args: argparse.Namespace, nc: NATS, stack: contextlib.AsyncExitStack,
               stop: asyncio.Event) -> None:
    db = await CatalogDB.open(args.db or os.path.join(args.data_dir, "catalog.db"))
    stack.push_async_callback(db.close)
    options = CatalogOptions(job_timeout=args.job_timeout, pending_timeout=args.pending_timeout,
                             delete_wait=args.delete_wait, reap_every=args.reap_every,
                             test_weak_kdf=args.test_weak_kdf or args.kdf_n is not None,
                             notify=NotifyConfig(urls=validate_notify(args.notify), attempts=args.notify_attempts,
                                                 backoff=args.notify_backoff),
                             stream_replicas=args.stream_replicas)
    service = CatalogService(nc, db, options)
    await service.start()
    stack.push_async_callback(service.stop)


if __name__ == "__main__":
    run_service("catalog", parser(), main)
