"""``--health-listen HOST:PORT``: HTTP probes for services that otherwise speak only NATS.

``GET /healthz`` answers 200 while the process runs (liveness); ``GET /readyz`` answers 200 while
it is connected to NATS and 503 otherwise (readiness). Nothing else is served. Kubernetes probes
use these (deploy/k8s/timevault.yaml); the gateway has its own ``/api/v1/health`` and ``/api/v1/ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--health-listen must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


async def serve_health(listen: str, ready: Callable[[], bool]) -> Callable[[], Awaitable[None]]:
    """Start the probe server; returns the coroutine function that stops it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if path == "/healthz":
                status, body = "200 OK", "ok\n"
            elif path == "/readyz":
                status, body = ("200 OK", "ready\n") if ready() else ("503 Service Unavailable", "NATS unreachable\n")
            else:
                status, body = "404 Not Found", "not found\n"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n{body}".encode())
            await writer.drain()
        except (OSError, TimeoutError, UnicodeDecodeError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    host, port = parse_listen(listen)
    server = await asyncio.start_server(handle, host, port)

    async def stop() -> None:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()

    return stop
