"""How the Space answers with an error.

Everything but the OAuth endpoints answers ``{"error": {"code", "message", "field"}}`` like the
TimeVault gateway. The device-flow endpoints (``/space/v1/device/code``, ``/space/v1/token``)
answer as RFC 8628 and RFC 6749 §5.2 say, ``{"error": "authorization_pending",
"error_description": …}``, so any OAuth client library understands them.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger("timevault.space")

_HTTP_CODES = {400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 411: "length_required", 413: "too_large", 415: "invalid",
               416: "invalid_range", 429: "too_many_requests"}


class SpaceError(Exception):
    """A request the Space refuses; becomes an error reply with `status`."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


class OAuthError(Exception):
    """An RFC 6749 §5.2 error of the device-flow endpoints."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message, "field": field}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


def oauth_response(exc: OAuthError) -> web.Response:
    body = json.dumps({"error": exc.error, "error_description": exc.description})
    return web.Response(status=exc.status, text=body, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def unauthorized(message: str) -> SpaceError:
    return SpaceError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="timevault-space"'})


def invalid(message: str, field: str | None = None) -> SpaceError:
    return SpaceError(400, "invalid", message, field)


def not_found(message: str, field: str | None = None) -> SpaceError:
    return SpaceError(404, "not_found", message, field)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SpaceError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)
    except OAuthError as exc:
        return oauth_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "invalid" if exc.status < 500 else "internal")
        allow = exc.headers.get("Allow")
        return error_response(exc.status, code, exc.reason, headers={"Allow": allow} if allow else None)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal", "internal error in the Space; see its log")
