"""The one error shape on the wire: `ErrorInfo` {code, message, field}, raised as `ServiceError`.

A service handler raises `ServiceError`; the single reply wrapper in `timevault.services.common.rpc`
turns it into an `ErrorReply` with the ``Tv-Error`` header set to the code. The gateway maps
`code` to an HTTP status with `HTTP_STATUS` and forwards the body unchanged.
"""

from __future__ import annotations

from typing import Literal

import msgspec

ErrorCode = Literal[
    "invalid",  # bad input: a field fails validation
    "not_found",  # plan, job or snapshot does not exist
    "conflict",  # duplicate name, or a change that is not allowed
    "busy",  # the plan already has a running job
    "unauthorized",  # wrong password / missing token
    "unavailable",  # a needed service or the location is unreachable
    "storage",  # the location refused the work: full, read-only or gone (the message says which)
    "internal",  # a bug; details are in the service log
]

HTTP_STATUS: dict[str, int] = {
    "invalid": 400,
    "unauthorized": 401,
    "not_found": 404,
    "conflict": 409,
    "busy": 409,
    "internal": 500,
    "unavailable": 503,
    "storage": 507,
}

ERROR_HEADER = "Tv-Error"
"""NATS header present (value = error code) on every error reply."""


class ErrorInfo(msgspec.Struct, kw_only=True):
    """A clear, user-facing error."""

    code: str
    """One of `ErrorCode`; unknown codes should be treated like ``internal``."""
    message: str
    """One sentence for humans; never contains passwords or keys."""
    field: str | None = None
    """The input field at fault (e.g. ``name``, ``schedule.time``), when there is one."""


class ErrorReply(msgspec.Struct, kw_only=True):
    """Body of an error reply: ``{"error": {...}}`` (also the gateway's HTTP error body)."""

    error: ErrorInfo
    """What went wrong."""


class ServiceError(Exception):
    """The root error of the services: what a caller should see, as a code, a message and a field.

    Services raise it (or a subclass) for every failure meant for a caller; a core error is
    turned into one where the service knows what it means (wrong password: ``unauthorized``,
    the location's repository is gone: ``not_found`` with field ``location``).
    """

    def __init__(self, code: ErrorCode | str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message, field=self.field)

    @classmethod
    def from_info(cls, info: ErrorInfo) -> ServiceError:
        return cls(info.code, info.message, info.field)

    def __str__(self) -> str:
        return self.message


def invalid(message: str, field: str | None = None) -> ServiceError:
    """Shorthand for a validation error on `field`."""
    return ServiceError("invalid", message, field)
