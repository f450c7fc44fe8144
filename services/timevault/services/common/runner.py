"""Entry point plumbing for ``python -m services.<name>``: args, logging, NATS, signals.

`run_service` parses ``--nats`` (plus the service's own options), connects with unlimited
reconnects (services must survive nats-server restarts), runs the service coroutine under an
`AsyncExitStack`, and stops it when SIGTERM/SIGINT sets the stop event. Subscriptions are
drained before the connection closes. Credentials come from the environment or files, never
from arguments (`timevault.services.common.natsauth`); every copy answers NATS service discovery
(`discovery`) and, with ``--health-listen``, HTTP probes (`health`).
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
from timevault.services.common import logs, natsauth
from timevault.services.common.discovery import Discovery
from timevault.services.common.natsio import tune_nats_client
from timevault.services.common.util import instance_id

DEFAULT_NATS = "nats://127.0.0.1:4222"
log = logging.getLogger("timevault")

ServiceMain = Callable[[argparse.Namespace, NATS, contextlib.AsyncExitStack, asyncio.Event], Awaitable[None]]


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}", description=description)
    parser.add_argument("--nats", default=os.environ.get("TIMEVAULT_NATS", DEFAULT_NATS),
                        help="NATS server URLs, comma-separated (credentials: $TIMEVAULT_NATS_USER and "
                             "$TIMEVAULT_NATS_PASSWORD[_FILE], never in the URL)")
    logs.add_arguments(parser)
    parser.add_argument("--health-listen", metavar="HOST:PORT", default=os.environ.get("TIMEVAULT_HEALTH_LISTEN"),
                        help="serve /healthz (alive) and /readyz (connected to NATS) over HTTP here")
    return parser


def add_stream_replicas(parser: argparse.ArgumentParser) -> None:
    """``--stream-replicas`` for the services that create JetStream streams."""
    parser.add_argument("--stream-replicas", type=int, default=int(os.environ.get("TIMEVAULT_STREAM_REPLICAS", "1")),
                        help="copies of each JetStream stream: the cluster size (default $TIMEVAULT_STREAM_REPLICAS or 1)")


async def connect(url: str, name: str, stop: asyncio.Event | None = None) -> NATS:
    """Connect, retrying until the server answers (it may still be starting)."""

    async def on_error(exc: Exception) -> None:
        log.debug("%s: NATS: %s", name, exc)

    async def on_disconnect() -> None:
        log.warning("%s: disconnected from NATS", name)

    async def on_reconnect() -> None:
        log.info("%s: reconnected to NATS", name)

    access = natsauth.access(url)
    delay = 0.1
    while True:
        try:
            return await nats.connect(
                **access.connect_options(),
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
            log.info("%s: waiting for NATS at %s (%s)", name, natsauth.display(url), exc)
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
        if args.health_listen:
            from timevault.services.common.health import serve_health

            stack.push_async_callback(await serve_health(args.health_listen, lambda: nc.is_connected))
        await main(args, nc, stack, stop)
        discovery = Discovery(nc, name, args.instance)
        await discovery.start()
        stack.push_async_callback(discovery.stop)
        where = nc.connected_url
        log.info("%s: ready (NATS %s:%s)", name, where.hostname if where else "?", where.port if where else "?")
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
    args.instance = instance_id(name)  # one id for jobs, uploads and discovery
    tune_allocator()  # long-lived processes moving MiB-sized buffers: keep RSS flat
    tune_nats_client()  # fewer copies of megabyte messages
    logs.setup(name, args.log_level, args.log_format)
    try:
        asyncio.run(_run(name, args, main))
    except natsauth.CredentialError as exc:
        log.error("%s: %s", name, exc)
        sys.exit(2)
    except KeyboardInterrupt:
        pass
