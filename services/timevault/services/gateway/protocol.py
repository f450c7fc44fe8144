"""Requests aiohttp refuses before any route answers: JSON errors too, and one log line each.

aiohttp's HTTP parser rejects some requests itself (a request line or header over its limit, a
malformed request line, bad chunked encoding) and answers them in plain text from
`RequestHandler.handle_error`, logging a traceback. The gateway answers every error with the
same JSON body, so `JsonErrorRequestHandler` replaces that one method; `install` puts it in
place of aiohttp's handler class (looked up by name when a connection is accepted). The
request line may be up to `MAX_LINE` bytes, so that a long but well-formed path reaches its
route and gets that route's error (a 10,000-character plan id: 404 naming ``plan_id``).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web_protocol, web_server
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from timevault.services.gateway.errors import error_response

log = logging.getLogger("timevault.gateway")
MAX_LINE = 16 * 1024
MAX_FIELD = 16 * 1024
HANDLER_ARGS = {"max_line_size": MAX_LINE, "max_field_size": MAX_FIELD}
_CODES = {413: "too_large", 431: "too_large"}


class JsonErrorRequestHandler(web_protocol.RequestHandler):
    """aiohttp's request handler, answering errors outside any route as JSON."""

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> StreamResponse:
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        else:  # the client's mistake: one line, no traceback
            log.info("refused a malformed request from %s: %s", request.remote, _describe(exc, message, status))
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        code = _CODES.get(status, "invalid" if status < 500 else "internal")
        text = "internal error in the gateway; see its log" if status >= 500 else _describe(exc, message, status)
        response = error_response(status, code, text)
        response.force_close()
        return response


def _describe(exc: BaseException | None, message: str | None, status: int) -> str:
    detail = getattr(exc, "message", None) or message or HTTPStatus(status).phrase
    text = " ".join(str(detail).split())
    return text if len(text) <= 200 else text[:197] + "..."


def install() -> None:
    """Make aiohttp's servers in this process use `JsonErrorRequestHandler` (idempotent)."""
    setattr(web_server, "RequestHandler", JsonErrorRequestHandler)  # noqa: B010 - aiohttp looks it up here


def handler_args() -> dict[str, Any]:
    return dict(HANDLER_ARGS)
