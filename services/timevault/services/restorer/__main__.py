"""``python -m timevault.services.restorer --nats URL``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from nats.aio.client import Client as NATS

from timevault.services.common.runner import base_parser, run_service
from timevault.services.restorer.browsing import BrowseService
from timevault.services.restorer.service import RestorerService


def parser() -> argparse.ArgumentParser:
    p = base_parser("restorer", "TimeVault restorer: restore jobs with a per-job password, and browsing sessions.")
    p.add_argument("--restore-root", action="append", default=[], metavar="DIR",
                   help="restores may land only below DIR (repeatable; default: the plan's sources, "
                   "<data-dir>/restores, the temporary folder, /mnt, /media, /srv, /home)")
    p.add_argument("--data-dir", default=os.environ.get("TIMEVAULT_DATA_DIR"))
    return p


async def main(args: argparse.Namespace, nc: NATS, stack: contextlib.AsyncExitStack,
               stop: asyncio.Event) -> None:
    service = RestorerService(nc, roots=args.restore_root or None, data_dir=args.data_dir, instance=args.instance)
    await service.start()
    stack.push_async_callback(service.stop)
    browsing = BrowseService(nc, service.instance, roots=args.restore_root or None, data_dir=args.data_dir)
    await browsing.start()
    stack.push_async_callback(browsing.stop)


if __name__ == "__main__":
    run_service("restorer", parser(), main)
