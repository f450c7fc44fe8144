"""``python -m timevault.services.restorer --nats URL``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from nats.aio.client import Client as NATS

from timevault.services.common.runner import base_parser, run_service
from timevault.services.restorer.service import RestorerService


def parser() -> argparse.ArgumentParser:
    return base_parser("restorer", "TimeVault restorer: restore jobs with a per-job password.")


async def main(args: argparse.Namespace, nc: NATS, stack: contextlib.AsyncExitStack,
               stop: asyncio.Event) -> None:
    service = RestorerService(nc)
    await service.start()
    stack.push_async_callback(service.stop)


if __name__ == "__main__":
    run_service("restorer", parser(), main)
