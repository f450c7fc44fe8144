"""Request bodies: size limit, JSON syntax, unknown fields and types, each a clear 4xx error.

The wire types in `proto` ignore unknown fields (schema evolution between services), but an
HTTP client that sends a field we do not know has made a mistake, so the gateway refuses it
with the field's path. Types are then checked by msgspec against the same Structs.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from timevault.proto.errors import ServiceError, invalid

T = TypeVar("T")
_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


class RestoreBody(msgspec.Struct, kw_only=True):
    """Body of ``POST /api/v1/plans/{plan_id}/snapshots/{snapshot_id}/restore`` (a `RestoreRequest`
    without the plan and snapshot, which come from the path)."""

    target: str
    """Absolute path of the folder to restore into; system folders are refused."""
    password: str
    """The plan's backup password, used for this restore only."""
    includes: list[str] = msgspec.field(default_factory=list)
    """Paths inside the snapshot to restore (empty = everything)."""
    allow_unverified: bool = False
    """Restore even a snapshot that contradicts the history endorsed with the password."""
    keep_setid: bool = False
    """Keep set-user-ID and set-group-ID bits (dropped by default)."""


class PayloadTooLarge(ServiceError):
    """The body is over the gateway's limit (HTTP 400, code too_large)."""


async def read_json(request: web.Request, type_: type[T], max_body: int) -> T:
    """The body decoded as `type_`, or a `ServiceError` naming what is wrong with it."""
    if request.content_length is not None and request.content_length > max_body:
        raise _too_large(max_body)
    try:
        data = await request.content.read(max_body + 1)
    except ValueError as exc:
        raise invalid(f"cannot read the request body: {exc}") from exc
    if len(data) > max_body:
        raise _too_large(max_body)
    if not data.strip():
        raise invalid("a JSON request body is required")
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # e.g. thousands of nested '['
        raise invalid("the request body is nested too deeply") from exc
    check_unknown_fields(raw, msgspec.inspect.type_info(type_))
    try:
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as exc:
        raise _type_error(exc) from exc


def check_unknown_fields(value: Any, info: msgspec.inspect.Type, path: str = "") -> None:
    """Raise `invalid` for the first object key that `info` (a Struct, maybe nested) does not define."""
    if isinstance(info, msgspec.inspect.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f for f in info.fields}
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                known = ", ".join(sorted(fields))
                raise invalid(f"unknown field {path + key!r}; known fields: {known}", path + key)
            check_unknown_fields(item, field.type, f"{path}{key}.")
    elif isinstance(info, msgspec.inspect.UnionType):
        for member in info.types:
            if isinstance(member, msgspec.inspect.StructType):
                check_unknown_fields(value, member, path)
    elif isinstance(info, msgspec.inspect.ListType) and isinstance(value, list):
        for item in value:
            check_unknown_fields(item, info.item_type, path)


def _type_error(exc: msgspec.ValidationError) -> ServiceError:
    # msgspec says e.g. "Expected `int`, got `str` - at `$.schedule.weekday`" or
    # "Object missing required field `time` - at `$.schedule`"; report the field as "schedule.time".
    text = str(exc)
    match = _AT.search(text)
    message = text[: match.start()] if match else text
    parts = [re.sub(r"\[\d+\]", "", match["path"])] if match and match["path"] else []
    missing = re.search(r"missing required field `([^`]+)`", message)
    if missing:
        parts.append(missing.group(1))
        message = "this field is required"
    field = ".".join(parts) or None
    return invalid(f"{field}: {message}" if field else message, field)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge("too_large", f"the request body is larger than {limit // 1024} KiB")
