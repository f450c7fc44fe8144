"""`create_app(config)`: the aiohttp application (API, event stream and web UI).

The app holds only its config, its NATS connection (opened and drained in a ``cleanup_ctx``)
and the OpenAPI document rendered once from the route table; every request becomes NATS
requests, so any number of gateway copies can run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from timevault.services.common.discovery import Discovery
from timevault.services.common.rpc import Stats
from timevault.services.common.runner import connect
from timevault.services.common.util import instance_id
from timevault.services.gateway import openapi, protocol
from timevault.services.gateway.config import GatewayConfig
from timevault.services.gateway.errors import error_middleware
from timevault.services.gateway.keys import CONFIG, HTTP_STATS, NATS_CLIENT, OPENAPI, READY_CACHE, STOPPING
from timevault.services.gateway.metrics import http_stats_middleware
from timevault.services.gateway.routes import add_routes, endpoints
from timevault.services.gateway.security import (
    headers_middleware,
    make_auth_middleware,
    on_prepare,
    origin_middleware,
)

log = logging.getLogger("timevault.gateway")
STATIC_DIR = Path(__file__).with_name("static")


async def nats_connection(app: web.Application) -> AsyncIterator[None]:
    nc = await connect(app[CONFIG].nats_url, "timevault-gateway")
    app[NATS_CLIENT] = nc
    # The gateway answers NATS service discovery too, with its HTTP routes as endpoints.
    discovery = Discovery(nc, "gateway", instance_id("gateway"), stats=app[HTTP_STATS])
    await discovery.start()
    yield
    await discovery.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.drain(), 5)
    with contextlib.suppress(Exception):
        await nc.close()


async def stop_streams(app: web.Application) -> None:
    app[STOPPING].set()


async def index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(config: GatewayConfig) -> web.Application:
    protocol.install()  # JSON errors for requests refused before any route
    app = web.Application(
        middlewares=[headers_middleware, http_stats_middleware, error_middleware, origin_middleware,
                     make_auth_middleware(config.token)],
        client_max_size=config.max_body,
        handler_args=protocol.handler_args(),
    )
    app[CONFIG] = config
    app[STOPPING] = asyncio.Event()
    app[HTTP_STATS] = Stats()
    app[READY_CACHE] = {}
    table = endpoints()
    app[OPENAPI] = openapi.render(table)
    add_routes(app, table)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False,
                          append_version=False)
    app.cleanup_ctx.append(nats_connection)
    app.on_shutdown.append(stop_streams)
    app.on_response_prepare.append(on_prepare)
    return app
