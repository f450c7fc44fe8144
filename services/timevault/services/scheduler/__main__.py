"""``python -m timevault.services.scheduler --nats URL``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from nats.aio.client import Client as NATS

from timevault.services.common.runner import base_parser, run_service
from timevault.services.scheduler.service import Scheduler


def parser() -> argparse.ArgumentParser:
    p = base_parser("scheduler", "TimeVault scheduler: fires plans' daily/weekly slots.")
    p.add_argument("--poll", type=float, default=30.0, help="seconds between catalog checks at most")
    return p


async def main(args: argparse.Namespace, nc: NATS, stack: contextlib.AsyncExitStack,
               stop: asyncio.Event) -> None:
    scheduler = Scheduler(nc, poll=args.poll, instance=args.instance)
    task = asyncio.create_task(scheduler.run(stop))

    async def finish() -> None:
        stop.set()
        await task

    stack.push_async_callback(finish)


if __name__ == "__main__":
    run_service("scheduler", parser(), main)
