"""Who is asking: a device (bearer token) or the account holder (a web session).

Device tokens are random 256-bit strings; the database keeps only their SHA-256 (a fast hash is
right for a high-entropy secret), so a leaked database signs nobody in. Every request looks its
token up again, so a revoked token or a removed account gets 401 at once.

The account holder signs in with name and password (argon2id) and gets a session cookie
(``HttpOnly``, ``SameSite=Strict``, ``Secure`` under TLS). Requests that change something also
need the session's CSRF token in ``X-Space-CSRF``. Sessions live in memory: a restart signs
people out of the web pages, never devices. Repeated wrong passwords from one address are slowed
down (`SignInLimiter`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from timevault.space.db import DBThread, TokenOwner
from timevault.space.errors import SpaceError, unauthorized

TOKEN_PREFIX = "tvs_"
SESSION_COOKIE = "tvspace_session"
CSRF_HEADER = "X-Space-CSRF"
SESSION_IDLE = 12 * 3600.0
TOUCH_EVERY = 60.0  # last_used of a device is written at most once a minute
FAILURES_ALLOWED = 10
FAILURE_WINDOW = 300.0


def new_device_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def bearer_token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


async def device_owner(request: web.Request, db: DBThread) -> TokenOwner:
    """The account behind the request's device token, or 401."""
    token = bearer_token(request)
    if token is None:
        raise unauthorized("a device token is required ('Authorization: Bearer …'); sign in to this Space first")
    owner = await db.run(db.db.token_owner, token_digest(token))
    if owner is None:
        raise unauthorized("this device is signed out of the Space (its token was revoked or its account "
                           "removed); sign in again")
    now = time.time()
    if owner.last_used is None or now - owner.last_used > TOUCH_EVERY:
        await db.run(db.db.touch_token, owner.token_id, now)
    return owner


@dataclass
class Session:
    id: str
    account_id: str
    account_name: str
    csrf: str
    expires: float


class Sessions:
    """Signed-in web sessions, in memory."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}

    def create(self, account_id: str, account_name: str) -> Session:
        self._sweep()
        session = Session(secrets.token_urlsafe(32), account_id, account_name, secrets.token_urlsafe(24),
                          time.time() + SESSION_IDLE)
        self._by_id[session.id] = session
        return session

    def get(self, request: web.Request) -> Session | None:
        sid = request.cookies.get(SESSION_COOKIE)
        session = self._by_id.get(sid) if sid else None
        if session is None or session.expires < time.time():
            return None
        session.expires = time.time() + SESSION_IDLE
        return session

    def require(self, request: web.Request) -> Session:
        """The request's session, or 401; a changing request also needs the CSRF header."""
        session = self.get(request)
        if session is None:
            raise SpaceError(401, "unauthorized", "sign in to the Space first")
        if request.method not in ("GET", "HEAD"):
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                raise SpaceError(403, "forbidden", f"missing or wrong {CSRF_HEADER} header")
        return session

    def drop(self, request: web.Request) -> None:
        sid = request.cookies.get(SESSION_COOKIE)
        if sid:
            self._by_id.pop(sid, None)

    def drop_account(self, account_id: str) -> None:
        for sid in [s.id for s in self._by_id.values() if s.account_id == account_id]:
            del self._by_id[sid]

    def _sweep(self) -> None:
        now = time.time()
        for sid in [s.id for s in self._by_id.values() if s.expires < now]:
            del self._by_id[sid]


class SignInLimiter:
    """At most `FAILURES_ALLOWED` wrong passwords per client address in `FAILURE_WINDOW` seconds."""

    def __init__(self) -> None:
        self._failures: dict[str, list[float]] = {}

    def check(self, address: str) -> None:
        recent = self._recent(address)
        if len(recent) >= FAILURES_ALLOWED:
            wait = int(recent[0] + FAILURE_WINDOW - time.time()) + 1
            raise SpaceError(429, "too_many_requests", f"too many wrong passwords; try again in {wait} s",
                             headers={"Retry-After": str(wait)})

    def failed(self, address: str) -> None:
        self._recent(address).append(time.time())

    def _recent(self, address: str) -> list[float]:
        cutoff = time.time() - FAILURE_WINDOW
        recent = [t for t in self._failures.get(address, []) if t > cutoff]
        self._failures[address] = recent
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            for key in [k for k, v in self._failures.items() if not v]:
                del self._failures[key]
        return recent
