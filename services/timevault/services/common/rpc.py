"""Request/reply over NATS with one error path.

`serve` subscribes a typed handler: it decodes the request, runs the handler, encodes the reply,
and turns a `ServiceError` (or any unexpected exception, as ``internal``) into an error reply.
`request` is the matching client: it raises the `ServiceError` an error reply carries;
`request_retrying` also waits out a service that is unavailable (see `retry` for the policy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from timevault.proto import wire
from timevault.proto.errors import ERROR_HEADER, ErrorReply, ServiceError
from timevault.services.common import retry
from timevault.services.common.natsio import Parts

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any]]


@dataclass
class Endpoint:
    """One served endpoint's figures (as NATS service discovery reports them in ``$SRV.STATS``)."""

    subject: str
    queue_group: str
    requests: int = 0
    errors: int = 0
    processing_ns: int = 0
    last_error: str = ""


class Stats:
    """Counters for one service's handlers: requests, errors and time spent, per endpoint.

    An endpoint is named by its subject, or by the `name` given to `serve` when many subjects
    share one (each upload session has its own subjects).
    """

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}

    def endpoint(self, name: str, subject: str, queue_group: str) -> Endpoint:
        found = self.endpoints.get(name)
        if found is None:
            found = self.endpoints[name] = Endpoint(subject, queue_group)
        return found

    @property
    def requests(self) -> dict[str, int]:
        return {name: e.requests for name, e in self.endpoints.items()}

    @property
    def errors(self) -> dict[str, int]:
        return {name: e.errors for name, e in self.endpoints.items()}


STATS = Stats()
"""This process's figures: `serve` records here unless given other `Stats` (discovery reports them)."""


async def _reply(nc: NATS, msg: Msg, body: bytes, headers: dict[str, str] | None = None) -> None:
    if not msg.reply:
        return
    try:
        await nc.publish(msg.reply, body, headers=headers)
    except nats.errors.Error as exc:  # the connection dropped; the caller will time out and retry
        log.warning("cannot reply on %s: %s", msg.subject, exc)


async def reply_error(nc: NATS, msg: Msg, error: ServiceError) -> None:
    await _reply(nc, msg, wire.encode(ErrorReply(error=error.info())), {ERROR_HEADER: error.code})


async def serve(
    nc: NATS,
    subject: str,
    request_type: type[T],
    handler: Callable[[T], Awaitable[Any]],
    *,
    queue: str = "",
    stats: Stats | None = None,
    msgpack: bool = False,
    concurrent: bool = True,
    raw: bool = False,
    name: str | None = None,
    pattern: str | None = None,
) -> Subscription:
    """Subscribe `handler` on `subject`; every message gets exactly one reply (result or error).

    With `raw`, the handler gets the message body as received (`request_type` is ignored) and
    decodes it itself; replies are still encoded as `msgpack` says. Requests, errors and time
    are counted in `stats` (default `STATS`) under `name` (default the subject; `pattern` is the
    subject discovery shows for it, e.g. with a wildcard for per-session subjects).
    """
    tasks: set[asyncio.Task[None]] = set()
    decode: Callable[[Any, Any], Any] = wire.decode_msgpack if msgpack else wire.decode
    if raw:
        decode = _undecoded
    encode = wire.encode_msgpack if msgpack else wire.encode

    figures = (stats or STATS).endpoint(name or subject, pattern or subject, queue)

    async def handle(msg: Msg) -> None:
        figures.requests += 1
        started = time.perf_counter_ns()
        try:
            result = await handler(decode(msg.data, request_type))
            await _reply(nc, msg, encode(result))
        except ServiceError as exc:
            figures.errors += 1
            figures.last_error = f"{exc.code}: {exc.message}"[:200]
            await reply_error(nc, msg, exc)
        except Exception:
            figures.errors += 1
            figures.last_error = "internal"
            log.exception("handler for %s failed", subject)
            await reply_error(nc, msg, ServiceError("internal", f"internal error in {subject}; see the log"))
        finally:
            figures.processing_ns += time.perf_counter_ns() - started

    async def callback(msg: Msg) -> None:
        if not concurrent:
            await handle(msg)
            return
        # Each request in its own task so one slow request does not hold up the subject.
        task = asyncio.create_task(handle(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return await nc.subscribe(subject, queue=queue, cb=callback, pending_bytes_limit=256 * 1024 * 1024)


def _undecoded(data: Any, _type: Any) -> Any:
    return data


async def request(
    nc: NATS,
    subject: str,
    message: Any,
    reply_type: type[R],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - passed to nats-py's request
    msgpack: bool = False,
) -> R:
    """Send a request and decode its reply; raises ServiceError (``unavailable`` when nobody answers)."""
    body = wire.encode_msgpack(message) if msgpack else wire.encode(message)
    return await request_encoded(nc, subject, body, reply_type, timeout=timeout, msgpack=msgpack)


async def request_encoded(
    nc: NATS,
    subject: str,
    body: bytes | Parts,
    reply_type: type[R],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - passed to nats-py's request
    msgpack: bool = False,
) -> R:
    """`request` for a body that is already encoded (e.g. a batch built once, or `Parts`)."""
    try:
        # A `Parts` body is sent uncopied by natsio's patch of nats-py (which annotates bytes).
        msg = await nc.request(subject, body, timeout=timeout)  # type: ignore[arg-type]
    except nats.errors.NoRespondersError as exc:
        raise ServiceError("unavailable", f"no service answers on {subject}") from exc
    except (TimeoutError, nats.errors.TimeoutError) as exc:
        raise ServiceError("unavailable", f"no reply on {subject} within {timeout:g}s") from exc
    except nats.errors.Error as exc:
        raise ServiceError("unavailable", f"NATS error on {subject}: {exc}") from exc
    if msgpack and not (msg.headers and ERROR_HEADER in msg.headers):
        return wire.decode_msgpack(msg.data, reply_type)
    return wire.decode_reply(msg.data, msg.headers, reply_type)


async def request_retrying(
    nc: NATS,
    subject: str,
    message: Any,
    reply_type: type[R],
    *,
    give_up_after: float = 60.0,
    timeout: float = 10.0,  # noqa: ASYNC109 - each attempt's, passed to nats-py's request
    msgpack: bool = False,
) -> R:
    """`request`, resent while the service is unavailable (no responders, no reply in time, a
    NATS error, or an ``unavailable`` error reply) for up to `give_up_after` seconds; any other
    error is raised at once. Only for requests that may safely be handled twice."""
    body = wire.encode_msgpack(message) if msgpack else wire.encode(message)
    return await retry.while_unavailable(
        lambda: request_encoded(nc, subject, body, reply_type, timeout=timeout, msgpack=msgpack),
        give_up_after=give_up_after)
