"""The one way the gateway answers with an error: ``{"error": {"code", "message", "field"}}``.

Handlers raise `timevault.proto.errors.ServiceError` (services' error replies arrive as one, too);
`error_middleware` turns it, aiohttp's own HTTP errors and any unexpected exception into
`error_response`, with the HTTP status from `timevault.proto.errors.HTTP_STATUS`.
"""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from timevault.proto.errors import HTTP_STATUS, ErrorInfo, ErrorReply, ServiceError

log = logging.getLogger("timevault.gateway")

_encoder = msgspec.json.Encoder()

# Codes for the HTTP-level failures aiohttp raises itself (no route, wrong method, ...).
# The issue lists an oversized body with the other validation errors: 400, code too_large.
_STATUS = {**HTTP_STATUS, "too_large": 400, "forbidden": 403}
_HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               413: "too_large", 415: "invalid"}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    """The single error-reply helper."""
    body = _encoder.encode(ErrorReply(error=ErrorInfo(code=code, message=message, field=field)))
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def service_error_response(exc: ServiceError) -> web.Response:
    status = _STATUS.get(exc.code, 500)
    code = exc.code if exc.code in _STATUS else "internal"
    headers = {"WWW-Authenticate": 'Bearer realm="timevault"'} if status == 401 and exc.field is None else None
    return error_response(status, code, exc.message, exc.field, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServiceError as exc:
        if _STATUS.get(exc.code, 500) >= 500:
            log.warning("%s %s: %s %s", request.method, request.path, exc.code, exc.message)
        return service_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "invalid" if exc.status < 500 else "internal")
        return error_response(exc.status, code, exc.reason, headers=_allow_header(exc))
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal", "internal error in the gateway; see its log")


def _allow_header(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None
