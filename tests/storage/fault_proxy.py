"""A scripted HTTP fault proxy that sits between an S3 client and a real (moto) S3 server.

Unlike `FaultyStorage`, which fakes failures above the client, this breaks the wire itself:
S3 XML error replies (500 InternalError, 503 SlowDown, ...), slow answers, and connections
dropped before or in the middle of a response. So the tests exercise the real botocore and
aiohttp error paths that `S3Storage` has to classify.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web

Action = Literal["error", "delay", "drop_before", "drop_mid"]

# Hop-by-hop and framing headers are the proxy's own business on each side.
_SKIP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}
)


@dataclass
class Rule:
    """Matches requests by HTTP method and a regex on path+query; fires up to `times` times.

    `times=None` fires on every matching request (a permanent fault).
    """

    action: Action
    method: str | None = None
    path: str | None = None
    status: int = 503
    code: str = "SlowDown"
    delay: float = 0.0
    times: int | None = 1
    fired: int = field(default=0, init=False)

    def matches(self, method: str, path_qs: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.method is not None and method != self.method:
            return False
        return self.path is None or re.search(self.path, path_qs) is not None


def s3_error_body(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>fault-proxy</RequestId></Error>"
    ).encode()


class FaultProxy:
    """Forwards every request to `upstream`, applying the first matching rule."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        self.url = ""

    def add(self, *rules: Rule) -> None:
        self.rules.extend(rules)

    def reset(self) -> None:
        self.rules.clear()
        self.requests.clear()

    def count(self, method: str, path: str = "") -> int:
        """How many requests with `method` whose path+query matches regex `path` arrived."""
        return sum(1 for m, p in self.requests if m == method and re.search(path, p))

    async def start(self) -> str:
        self._client = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self._stopping.set()  # ends pending delays now rather than at shutdown
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def _match(self, request: web.Request) -> Rule | None:
        for rule in self.rules:
            if rule.matches(request.method, request.path_qs):
                rule.fired += 1
                return rule
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        body = await request.read()
        rule = self._match(request)
        if rule is not None and rule.action == "error":
            return web.Response(
                status=rule.status,
                body=s3_error_body(rule.code, "injected by the fault proxy"),
                content_type="application/xml",
            )
        if rule is not None and rule.action == "drop_before":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()  # never sent: the connection is gone
        if rule is not None and rule.action == "delay":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), rule.delay)

        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP_HEADERS}
        headers["Host"] = request.headers.get("Host", "")
        async with self._client.request(
            request.method,
            self._upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _SKIP_HEADERS}
            declared = int(upstream.headers.get("Content-Length", len(payload)))
            status = upstream.status

        response = web.StreamResponse(status=status, headers=reply_headers)
        response.content_length = declared
        await response.prepare(request)
        if rule is not None and rule.action == "drop_mid":
            # Promise the whole body, send half, then cut the connection.
            await response.write(payload[: len(payload) // 2])
            await asyncio.sleep(0.01)
            assert request.transport is not None
            request.transport.abort()
            return response
        if payload:
            await response.write(payload)
        await response.write_eof()
        return response
