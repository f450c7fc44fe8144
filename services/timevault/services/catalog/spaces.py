"""Sign-ins to TimeVault Spaces: the catalog keeps one device token per Space.

The token is what lets the services write a plan's repository on a Space; it is kept in the
catalog database (private, like the plans' write keys) and handed out only in `PlanSecrets`. No
backup password ever reaches a Space or this table.

``tv.catalog.space.login`` starts the device sign-in (RFC 8628) and answers at once with the code
to show; a background task polls the Space until the account holder approves (the token is
stored), denies, or the code expires. ``status`` reports where that stands and, once signed in,
asks the Space for the account and its free space; a Space that refuses the token (revoked on
the Space's pages, account removed) makes the sign-in ``signed_out`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from timevault.core.storage.base import LocationError
from timevault.core.storage.space import SpaceSignedOut
from timevault.core.storage.space_url import (
    SpaceEndpoint,
    is_space_location,
    parse_space_location,
    parse_space_url,
)
from timevault.proto import subjects
from timevault.proto.errors import ServiceError, invalid
from timevault.proto.spaces import SpaceList, SpaceListRequest, SpaceLogin, SpaceRef, SpaceStatus
from timevault.services.catalog.context import Catalog
from timevault.services.catalog.db import CatalogDB, SpaceSignIn
from timevault.services.common import rpc
from timevault.services.common.space_signin import (
    DeviceCode,
    SignInFailed,
    account_info,
    request_code,
    revoke,
    wait_for_token,
)
from timevault.services.common.util import utcnow

log = logging.getLogger(__name__)

STATUS_TIMEOUT = 5.0
_OUTCOME = {"access_denied": "denied", "expired_token": "expired"}


@dataclass
class PendingSignIn:
    endpoint: SpaceEndpoint
    code: DeviceCode
    task: asyncio.Task[None] | None = None
    status: str = "pending"
    account: str | None = None
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def space_token_for(db: CatalogDB, location: str) -> str | None:
    """The device token kept for the Space a location is on, or None (not a Space, not signed in)."""
    if not is_space_location(location):
        return None
    try:
        base = parse_space_location(location).base_url
    except LocationError:
        return None
    row = await db.get_space_signin(base)
    return row.token if row else None


def space_of(text: str) -> SpaceEndpoint:
    """The Space named by a URL or by a ``space://`` location on it; `invalid` if neither."""
    try:
        if is_space_location(text):
            options = parse_space_location(text)
            return SpaceEndpoint(options.base_url, options.ca)
        return parse_space_url(text)
    except LocationError as exc:
        raise invalid(str(exc), "space") from exc


class SpaceSignIns:
    """The catalog's part of signing in to Spaces (table ``space_signins`` of the catalog DB)."""

    def __init__(self, catalog: Catalog, *, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.catalog = catalog
        self.db = catalog.db
        self._sleep = sleep
        self._pending: dict[str, PendingSignIn] = {}

    async def start(self, stats: rpc.Stats | None = None) -> None:
        handlers: list[tuple[str, type, Any]] = [
            (subjects.SPACE_LOGIN, SpaceRef, self.login),
            (subjects.SPACE_STATUS, SpaceRef, self.status),
            (subjects.SPACE_LIST, SpaceListRequest, self.list),
            (subjects.SPACE_LOGOUT, SpaceRef, self.logout),
        ]
        for subject, request_type, handler in handlers:
            await rpc.serve(self.catalog.nc, subject, request_type, handler, queue=subjects.CATALOG_QUEUE,
                            stats=stats)

    async def stop(self) -> None:
        tasks = [p.task for p in self._pending.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- what plans need -----------------------------------------------------------------

    async def token_for(self, location: str) -> str | None:
        """The device token for a Space location, or None (not a Space, or not signed in)."""
        return await space_token_for(self.db, location)

    async def require_token(self, location: str) -> str | None:
        """Like `token_for`, but a Space location without a sign-in is a clear 400."""
        token = await self.token_for(location)
        if token is None and is_space_location(location):
            base = space_of(location).base_url
            raise invalid(f"sign in to this Space first: timevault space login {base} (or Sign in in the web UI)",
                          "location")
        return token

    # --- handlers ------------------------------------------------------------------------

    async def login(self, req: SpaceRef) -> SpaceLogin:
        endpoint = space_of(req.space)
        old = self._pending.pop(endpoint.base_url, None)
        if old is not None and old.task is not None:
            old.task.cancel()
        try:
            code = await request_code(endpoint)
        except SignInFailed as exc:
            raise ServiceError("unavailable", exc.message, "space") from exc
        pending = PendingSignIn(endpoint, code)
        pending.task = asyncio.create_task(self._complete(pending))
        self._pending[endpoint.base_url] = pending
        log.info("signing in to the Space at %s (code %s)", endpoint.base_url, code.user_code)
        return SpaceLogin(space=endpoint.base_url, user_code=code.user_code, verification_uri=code.verification_uri,
                          verification_uri_complete=code.verification_uri_complete, expires_in=code.expires_in,
                          interval=code.interval)

    async def _complete(self, pending: PendingSignIn) -> None:
        try:
            signed_in = await wait_for_token(pending.endpoint, pending.code, sleep=self._sleep)
        except SignInFailed as exc:
            pending.status, pending.message = _OUTCOME.get(exc.code, "failed"), exc.message
            log.info("sign-in to %s ended: %s", pending.endpoint.base_url, exc.message)
            return
        old = await self.db.get_space_signin(pending.endpoint.base_url)
        async with self.catalog.transaction():
            await self.db.save_space_signin(SpaceSignIn(pending.endpoint.base_url, pending.endpoint.ca,
                                                        signed_in.account, signed_in.token), utcnow())
        pending.status, pending.account = "signed_in", signed_in.account
        log.info("signed in to the Space at %s as %s", pending.endpoint.base_url, signed_in.account)
        if old is not None and old.token != signed_in.token:
            with contextlib.suppress(SignInFailed):  # the previous device token is not needed any more
                await revoke(pending.endpoint, old.token)

    async def status(self, req: SpaceRef) -> SpaceStatus:
        return await self._status(space_of(req.space).base_url)

    async def _status(self, base: str) -> SpaceStatus:
        pending = self._pending.get(base)
        if pending is not None and pending.status == "pending":
            return SpaceStatus(space=base, status="pending", user_code=pending.code.user_code,
                               verification_uri_complete=pending.code.verification_uri_complete)
        row = await self.db.get_space_signin(base)
        if row is None:
            if pending is not None and pending.status != "signed_in":
                return SpaceStatus(space=base, status=pending.status, message=pending.message)  # type: ignore[arg-type]
            return SpaceStatus(space=base, status="signed_out", message="not signed in to this Space")
        endpoint = SpaceEndpoint(base, row.ca)
        try:
            async with asyncio.timeout(STATUS_TIMEOUT):
                info = await account_info(endpoint, row.token)
        except SignInFailed as exc:
            return SpaceStatus(space=base, status="signed_in", account=row.account, message=exc.message)
        except TimeoutError:
            return SpaceStatus(space=base, status="signed_in", account=row.account,
                               message=f"the Space at {base} did not answer")
        except SpaceSignedOut:  # the Space no longer knows this token
            await self._forget(base, row.token)
            return SpaceStatus(space=base, status="signed_out", account=row.account,
                               message="signed out of Space: the device token was revoked or its account removed; "
                                       "sign in again")
        return SpaceStatus(space=base, status="signed_in", account=str(info.get("account") or row.account),
                           quota=info.get("quota"), used=info.get("used"), free=info.get("free"))

    async def list(self, _req: SpaceListRequest) -> SpaceList:
        bases = await self.db.list_space_signins()
        bases += [b for b in self._pending if b not in bases]
        return SpaceList(spaces=list(await asyncio.gather(*(self._status(base) for base in bases))))

    async def logout(self, req: SpaceRef) -> SpaceStatus:
        base = space_of(req.space).base_url
        pending = self._pending.pop(base, None)
        if pending is not None and pending.task is not None:
            pending.task.cancel()
        row = await self.db.get_space_signin(base)
        if row is not None:
            with contextlib.suppress(SignInFailed):  # unreachable: the token is forgotten here all the same
                await revoke(SpaceEndpoint(base, row.ca), row.token)
            await self._forget(base, row.token)
        return SpaceStatus(space=base, status="signed_out", account=row.account if row else None)

    async def _forget(self, base: str, token: str) -> None:
        async with self.catalog.transaction():
            await self.db.delete_space_signin(base, token)
