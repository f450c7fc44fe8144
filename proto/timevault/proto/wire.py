"""Encoding helpers shared by every service: JSON for messages, MessagePack for the chunk stream."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from timevault.proto.errors import ERROR_HEADER, ErrorReply, ServiceError

T = TypeVar("T")

_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_error_decoder = msgspec.json.Decoder(ErrorReply)


def encode(message: Any) -> bytes:
    return _json_encoder.encode(message)


def encode_msgpack(message: Any) -> bytes:
    return _msgpack_encoder.encode(message)


def decode(data: bytes, type_: type[T]) -> T:
    """Decode a request or reply; unknown fields are ignored, bad input raises ServiceError(invalid)."""
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:
        raise ServiceError("invalid", f"bad message: {exc}", _field_of(exc)) from exc
    except msgspec.DecodeError as exc:
        raise ServiceError("invalid", f"malformed message: {exc}") from exc
    except RecursionError as exc:
        raise ServiceError("invalid", "malformed message: nested too deeply") from exc


def decode_msgpack(data: bytes, type_: type[T]) -> T:
    try:
        return msgspec.msgpack.decode(data, type=type_)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        raise ServiceError("invalid", f"bad message: {exc}") from exc


def decode_reply(data: bytes, headers: dict[str, str] | None, type_: type[T]) -> T:
    """Decode a reply; raise the ServiceError it carries when it is an error reply."""
    if headers and ERROR_HEADER in headers:
        try:
            raise ServiceError.from_info(_error_decoder.decode(data).error)
        except msgspec.DecodeError as exc:
            raise ServiceError("internal", "malformed error reply") from exc
    return decode(data, type_)


def _field_of(exc: msgspec.ValidationError) -> str | None:
    # msgspec reports "... - at `$.schedule.time`"; turn it into "schedule.time".
    text = str(exc)
    if "at `$." in text:
        return text.split("at `$.", 1)[1].rstrip("`").split("[")[0]
    if "missing required field `" in text:
        return text.split("missing required field `", 1)[1].split("`")[0]
    return None
