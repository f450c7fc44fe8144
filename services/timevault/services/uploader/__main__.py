"""``python -m timevault.services.uploader --nats URL``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from nats.aio.client import Client as NATS

from timevault.services.common.runner import base_parser, run_service
from timevault.services.uploader.service import UploaderService


def parser() -> argparse.ArgumentParser:
    p = base_parser("uploader", "TimeVault uploader: packs encrypted blobs into the plan's location.")
    p.add_argument("--pack-size", type=int, default=None, help="target pack size in bytes")
    p.add_argument("--idle-timeout", type=float, default=600.0)
    return p


async def main(args: argparse.Namespace, nc: NATS, stack: contextlib.AsyncExitStack,
               stop: asyncio.Event) -> None:
    service = UploaderService(nc, pack_size=args.pack_size, idle_timeout=args.idle_timeout,
                              instance=args.instance)
    await service.start()
    stack.push_async_callback(service.stop)


if __name__ == "__main__":
    run_service("uploader", parser(), main)
