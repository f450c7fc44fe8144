"""Entry point plumbing for ``python -m services.<name>``: args, logging, NATS, signals.

`run_service` parses ``--nats`` (plus the service's own options), connects with unlimited
reconnects (services must survive nats-server restarts), runs the service coroutine under an
`AsyncExitStack`, and stops it when SIGTERM/SIGINT sets the stop event. Subscriptions are
drained before the connection closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NATS

from timevault.core.memory import tune_allocator
from timevault.services.common.natsio import tune_nats_client

DEFAULT_NATS = "nats://127.0.0.1:4222"
log = logging.getLogger("timevault")

ServiceMain = Callable[[argparse.Namespace, NATS, contextlib.AsyncExitStack, asyncio.Event], Awaitable[None]]


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}", description=description)
    parser.add_argument("--nats", default=os.environ.get("TIMEVAULT_NATS", DEFAULT_NATS), help="NATS URL")
    parser.add_argument("--log-level", default=os.environ.get("TIMEVAULT_LOG_LEVEL", "INFO"))
    return parser


async def connect(url: str, name: str, stop: asyncio.Event | None = None) -> NATS:
    """Connect, retrying until the server answers (it may still be starting)."""

    async def on_error(exc: Exception) -> None:
        log.debug("%s: NATS: %s", name, exc)

    async def on_disconnect() -> None:
        log.warning("%s: disconnected from NATS", name)

    async def on_reconnect() -> None:
        log.info("%s: reconnected to NATS", name)

    delay = 0.1
    while True:
        try:
            return await nats.connect(
                url,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                drain_timeout=5,
                allow_reconnect=True,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            )
        except (OSError, nats.errors.Error) as exc:
            if stop is not None and stop.is_set():
                raise
            log.info("%s: waiting for NATS at %s (%s)", name, url, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _run(name: str, args: argparse.Namespace, main: ServiceMain) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        nc = await connect(args.nats, f"timevault-{name}", stop)
        stack.push_async_callback(_close, nc)
        await main(args, nc, stack, stop)
        log.info("%s: ready (NATS %s)", name, nc.connected_url.netloc if nc.connected_url else args.nats)
        await stop.wait()
        log.info("%s: stopping", name)


async def _close(nc: NATS) -> None:
    with contextlib.suppress(Exception):
        await nc.drain()
    with contextlib.suppress(Exception):
        await nc.close()


def run_service(name: str, parser: argparse.ArgumentParser, main: ServiceMain,
                argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    tune_allocator()  # long-lived processes moving MiB-sized buffers: keep RSS flat
    tune_nats_client()  # fewer copies of megabyte messages
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format=f"%(asctime)s {name} %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(_run(name, args, main))
    except KeyboardInterrupt:
        pass
