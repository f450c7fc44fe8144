"""Running the Space: ``timevault space serve`` (TLS, or plain HTTP on loopback only).

One server per data folder (an exclusive lock on ``<data-dir>/space.lock``): two processes
writing the same database and objects would each believe the other's writes were abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import ssl
import sys
from collections.abc import Iterator
from typing import TextIO

from aiohttp import web

from timevault.space.app import create_app
from timevault.space.config import ConfigError, SpaceConfig

log = logging.getLogger("timevault.space")


@contextlib.contextmanager
def data_dir_lock(config: SpaceConfig) -> Iterator[None]:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(config.data_dir / "space.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another Space server is running on {config.data_dir}") from None
        yield
    finally:
        os.close(fd)


def tls_context(config: SpaceConfig) -> ssl.SSLContext | None:
    if not config.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate or key: {exc}") from exc
    return context


def url_of(config: SpaceConfig, port: int) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{'https' if config.tls else 'http'}://{host}:{port}"


async def serve(config: SpaceConfig, out: TextIO = sys.stdout) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit code."""
    context = tls_context(config)
    with data_dir_lock(config):
        runner = web.AppRunner(create_app(config), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from exc
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            port = sockets[0].getsockname()[1] if sockets else config.port
            url = url_of(config, port)
            print(f"TimeVault Space at {url} (data in {config.data_dir}, objects in {config.storage_location})",
                  file=out, flush=True)
            if not config.tls:
                print("plain HTTP without a certificate: serving loopback addresses only; give --tls-cert and "
                      "--tls-key to serve other machines", file=out, flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:
            await runner.cleanup()
    return 0
