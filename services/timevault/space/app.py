"""`create_app(config)`: the Space's aiohttp application (API, web pages, janitor).

Resources (the database thread, the storage location, the janitor task) are opened in a
``cleanup_ctx`` and kept in one `SpaceState` under `STATE`; tests build the app from the same
factory as ``timevault space serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from timevault.core.storage import StorageError, open_location
from timevault.space.api import add_routes
from timevault.space.auth import Sessions, SignInLimiter
from timevault.space.config import SpaceConfig
from timevault.space.db import DBThread, SpaceDB
from timevault.space.device import DeviceFlows
from timevault.space.errors import error_middleware, error_response
from timevault.space.objects import ObjectStore
from timevault.space.passwords import PasswordChecker
from timevault.space.state import STATE, SpaceState

log = logging.getLogger("timevault.space")
STATIC_DIR = Path(__file__).with_name("static")
CONFIG: web.AppKey[SpaceConfig] = web.AppKey("space_config", SpaceConfig)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


async def resources(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    config.data_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if config.storage is None:
        # The default folder is the Space's own; a folder location is never created by the
        # storage layer (a vanished disk must not be silently replaced by an empty folder).
        (config.data_dir / "objects").mkdir(mode=0o700, exist_ok=True)
    db = DBThread(SpaceDB(config.db_path))
    storage = open_location(config.storage_location)
    store = ObjectStore(db, storage, segment_size=config.segment_size, upload_buffer=config.upload_buffer,
                        read_piece=config.read_piece)
    flows = DeviceFlows(expires_in=config.device_expires_in, interval=config.device_interval)
    app[STATE] = SpaceState(config, db, store, flows, Sessions(), SignInLimiter(), PasswordChecker())
    janitor = asyncio.create_task(_janitor(app[STATE], started))
    try:
        yield
    finally:
        janitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await janitor
        await store.close()
        await storage.close()
        await asyncio.to_thread(db.close)


async def _janitor(state: SpaceState, started: float) -> None:
    """Purge expired trash, removed accounts' objects and writes a restart cut off."""
    first = True
    while True:
        try:
            removed = await state.store.purge(trash_days=state.config.trash_days,
                                              abandoned_before=started if first else None)
            if removed:
                log.info("janitor removed %d stored versions", removed)
            first = False
        except (StorageError, OSError) as exc:
            log.warning("janitor: %s", exc)
        await asyncio.sleep(state.config.janitor_every)


def _secure(response: web.StreamResponse, path: str) -> None:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if path.startswith("/space/"):
        headers.setdefault("Cache-Control", "no-store")


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    _secure(response, request.path)


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Browsers may call the API only from the Space's own pages (no CORS, ever)."""
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS":
        return error_response(403, "forbidden", "cross-origin requests are not allowed")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        return error_response(403, "forbidden", "cross-origin requests are not allowed")
    return await handler(request)


def _page(name: str) -> Handler:
    async def page(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})
    return page


def create_app(config: SpaceConfig) -> web.Application:
    # Object bodies are streamed, never read whole: the size limit applies to JSON bodies only.
    app = web.Application(middlewares=[error_middleware, origin_middleware], client_max_size=1024 * 1024)
    app[CONFIG] = config
    add_routes(app)
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/device", _page("device.html"))
    app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
    app.cleanup_ctx.append(resources)
    app.on_response_prepare.append(on_prepare)
    return app
