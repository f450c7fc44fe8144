"""The fault proxy of tests/storage, plus what the end-to-end tests need on top of it.

- `CountingProxy` counts the requests in flight at the proxy and keeps the peak. A request
  counts from the moment the proxy has its headers until the proxy starts answering (the
  response is prepared) or drops the connection. A client cannot start a request in a freed
  slot before it has the previous answer, so this never overstates the client's concurrency.
- `LateRule` is a `Rule` that lets the first `skip` matching requests through and fires on the
  ones after: "every PUT of a pack after the first one fails".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.storage.fault_proxy import FaultProxy, Rule


@dataclass
class LateRule(Rule):
    """A `Rule` that ignores its first `skip` matching requests."""

    skip: int = 0
    seen: int = field(default=0, init=False)

    def matches(self, method: str, path_qs: str) -> bool:
        if not super().matches(method, path_qs):
            return False
        self.seen += 1
        return self.seen > self.skip


class CountingProxy(FaultProxy):
    """A `FaultProxy` that also measures how many requests are in flight at once."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.in_flight = 0
        self.peak = 0
        self._counted: set[int] = set()  # id() of the requests now counted in flight

    def reset_peak(self) -> None:
        self.peak = self.in_flight

    async def start(self) -> str:
        # FaultProxy.start with one addition: a hook that runs just before any response is sent.
        self._client = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_response_prepare.append(self._prepared)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def _leave(self, request: web.Request) -> None:
        if id(request) in self._counted:
            self._counted.discard(id(request))
            self.in_flight -= 1

    async def _prepared(self, request: web.Request, response: web.StreamResponse) -> None:
        self._leave(request)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self._counted.add(id(request))
        try:
            return await super()._handle(request)
        finally:
            self._leave(request)  # a dropped connection never prepares a response
