"""Bearer-token check, security headers, same-origin policy and restore-target rules.

Every ``/api/`` path except health and the OpenAPI document needs ``Authorization: Bearer``
with the token `timevault up` wrote (compared in constant time). The web UI at ``/`` is served
without auth; the page asks for the token and sends it as a header, never in a URL.
No CORS headers are ever sent, and a request whose ``Origin`` is another site is refused.
"""

from __future__ import annotations

import hmac
import os
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from timevault.proto.errors import invalid
from timevault.proto.plans import path_problem
from timevault.services.gateway.errors import error_response

PUBLIC_PATHS = frozenset({"/api/v1/health", "/api/v1/ready", "/api/v1/openapi.json"})
METRICS_PATH = "/metrics"  # outside /api/ by Prometheus convention, but it needs the token too

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

# Restoring into or over these would damage the system; the target must be elsewhere.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
                "/sbin", "/sys", "/usr", "/var/lib", "/var/run", "/snap")
SYSTEM_FOLDERS = ("/", "/home", "/root", "/var", "/opt", "/srv", "/mnt", "/media", "/tmp", "/lost+found")


def token_key(token: str) -> bytes:
    return token.encode()


def bearer_ok(header: str | None, token: bytes) -> bool:
    """True when `header` is ``Bearer <token>``; the comparison takes the same time for any guess."""
    scheme, _, value = (header or "").partition(" ")
    return hmac.compare_digest(value.strip().encode(), token) and scheme.lower() == "bearer"


def make_auth_middleware(token: str) -> Middleware:
    key = token_key(token)

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        protected = request.path.startswith("/api/") or request.path == METRICS_PATH
        if protected and request.path not in PUBLIC_PATHS and request.method != "OPTIONS":
            if not bearer_ok(request.headers.get("Authorization"), key):
                return error_response(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is "
                                      "required (the token is in <data-dir>/gateway.json)",
                                      headers={"WWW-Authenticate": 'Bearer realm="timevault"'})
        return await handler(request)

    return auth_middleware


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse cross-site browser requests (and CORS preflights) outright."""
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS":
        return error_response(403, "forbidden", "cross-origin requests are not allowed")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        return error_response(403, "forbidden", "cross-origin requests are not allowed")
    return await handler(request)


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    _secure(response, request.path)
    return response


def _secure(response: web.StreamResponse, path: str) -> None:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if path.startswith("/api/") or path == METRICS_PATH:
        headers.setdefault("Cache-Control", "no-store")
    elif path.startswith("/static/"):
        # Revalidate (a 304 when unchanged): the UI is many modules, and a browser that kept some
        # from before an upgrade would mix two versions of it.
        headers.setdefault("Cache-Control", "no-cache")


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Streamed responses (SSE, static files) skip the middleware's header step; add them here."""
    _secure(response, request.path)


def check_restore_target(target: str) -> str:
    """The normalised absolute target, or `invalid` when it is relative or a system folder."""
    if not isinstance(target, str) or not target.strip():
        raise invalid("the restore target folder is required", "target")
    if "\x00" in target:
        raise invalid("the restore target contains a NUL character", "target")
    if not os.path.isabs(target):
        raise invalid(f"the restore target must be an absolute path, got {target[:100]!r}", "target")
    problem = path_problem(target)
    if problem is not None:
        raise invalid(f"the restore target {problem}", "target")
    normal = os.path.normpath(target)
    for candidate in {normal, os.path.realpath(normal)}:
        if candidate.startswith("//"):
            candidate = "/" + candidate.lstrip("/")
        if candidate in SYSTEM_FOLDERS or any(_inside(candidate, tree) for tree in SYSTEM_TREES):
            raise invalid(f"refusing to restore into the system folder {candidate}; choose an empty "
                          "folder such as /tmp/restore or one in your home", "target")
    return normal


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree + "/")
