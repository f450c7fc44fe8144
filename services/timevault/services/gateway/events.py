"""``GET /api/v1/events``: live job status, progress and plan changes as Server-Sent Events.

Each open stream has its own subscriptions that live exactly as long as the HTTP response, so
any gateway copy can serve any client. Events are ``event: job|progress|plan`` with the message
JSON as ``data``. Browsers read the stream with ``fetch()`` so the bearer token travels in a
header, never in the URL.

Job and plan events come from the JetStream stream ``TV_EVENTS`` (an ordered consumer) and carry
``id: <stream sequence>``; a client that sends ``Last-Event-ID`` (as EventSource does when it
reconnects) gets every event after that one first, for as long as the stream keeps them.
Progress events are heartbeats and are not kept: they come live, without an id. Without the
stream (an older catalog), job and plan events are forwarded live, without ids, too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from timevault.proto import subjects
from timevault.proto.errors import invalid
from timevault.services.gateway.keys import CONFIG, NATS_CLIENT, STOPPING

log = logging.getLogger("timevault.gateway")

QUEUE_SIZE = 1000
# How often a quiet stream checks that its client is still there (`timevault backup --wait`
# closes its stream when the job ends; the subscription should not outlive it by a heartbeat).
CLIENT_CHECK = 1.0
KINDS = {"job": "job", "progress": "progress", "plan": "plan"}


def sse_frame(kind: str, data: bytes, event_id: int | None = None) -> bytes:
    lines = data.decode("utf-8", "replace").splitlines() or [""]
    head = f"id: {event_id}\n" if event_id is not None else ""
    return (head + f"event: {kind}\n" + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


def _kind(subject: str) -> str | None:
    parts = subject.split(".")  # tv.events.<kind>.<id>
    return KINDS.get(parts[2]) if len(parts) == 4 else None


def _subjects(request: web.Request) -> tuple[str, str]:
    """(the kept events' filter, the progress subject) for this stream."""
    job = request.query.get("job")
    if job is None:
        return "", subjects.JOB_PROGRESS_ALL  # "": every subject of the events stream
    try:
        return subjects.job_event(job), subjects.job_progress(job)
    except ValueError as exc:
        raise invalid("job must be a job id", "job") from exc


def last_event_id(request: web.Request) -> int | None:
    text = request.headers.get("Last-Event-ID", "").strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 19:
        raise invalid("Last-Event-ID must be an event id this stream sent", "Last-Event-ID")
    return int(text)


async def _subscribe_kept(nc: NATS, filter_subject: str, after: int | None,
                          cb: Any) -> Any:
    """An ordered consumer on the events stream: from just after `after`, or only new events."""
    js = nc.jetstream()
    # The consumer is deleted when the stream ends (`_end_kept`); the threshold is the server's
    # backstop should the gateway die first.
    if after is None:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW, inactive_threshold=30.0)
    else:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1,
                                inactive_threshold=30.0)
    return await js.subscribe(filter_subject, stream=subjects.EVENTS_STREAM, ordered_consumer=True,
                              config=config, cb=cb, idle_heartbeat=5.0)


async def stream_events(request: web.Request) -> web.StreamResponse:
    nc = request.app[NATS_CLIENT]
    kept_filter, progress = _subjects(request)
    after = last_event_id(request)
    queue: asyncio.Queue[tuple[Msg, int | None]] = asyncio.Queue(QUEUE_SIZE)

    def put(item: tuple[Msg, int | None]) -> None:
        if queue.full():  # a slow reader loses the oldest events rather than growing memory
            queue.get_nowait()
        queue.put_nowait(item)

    async def on_live(msg: Msg) -> None:
        put((msg, None))

    async def on_kept(msg: Msg) -> None:
        put((msg, msg.metadata.sequence.stream))

    subs: list[Any] = [await nc.subscribe(progress, cb=on_live)]
    kept = None
    try:
        kept = await _subscribe_kept(nc, kept_filter, after, on_kept)
    except Exception as exc:  # no events stream (yet): forward job and plan events live, without ids
        log.debug("events stream unavailable (%s); forwarding live events", exc)
        live = [kept_filter] if kept_filter else [subjects.JOB_EVENTS_ALL, subjects.PLAN_EVENTS_ALL]
        subs += [await nc.subscribe(subject, cb=on_live) for subject in live]
    try:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        await response.write(b"retry: 3000\n: connected\n\n")
        await _pump(request, response, queue)
        return response
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if kept is not None:
            await _end_kept(nc, kept)


async def _end_kept(nc: NATS, sub: Any) -> None:
    with contextlib.suppress(Exception):
        name = (await sub.consumer_info()).name
        await sub.unsubscribe()
        await nc.jetstream().delete_consumer(subjects.EVENTS_STREAM, name)


async def _pump(request: web.Request, response: web.StreamResponse,
                queue: asyncio.Queue[tuple[Msg, int | None]]) -> None:
    stopping = request.app[STOPPING]
    heartbeat = request.app[CONFIG].sse_heartbeat
    loop = asyncio.get_running_loop()
    last_write = loop.time()
    stop_wait = asyncio.ensure_future(stopping.wait())
    try:
        while not stopping.is_set():
            get = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({get, stop_wait}, timeout=min(heartbeat, CLIENT_CHECK),
                                         return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                if request.transport is None or request.transport.is_closing():
                    return  # the client left: end the subscription now, not at the next write
                if not stopping.is_set() and loop.time() - last_write >= heartbeat:
                    await response.write(b": keep-alive\n\n")
                    last_write = loop.time()
                continue
            msg, event_id = get.result()
            kind = _kind(msg.subject)
            if kind is not None:
                await response.write(sse_frame(kind, msg.data, event_id))
                last_write = loop.time()
    except ConnectionResetError:
        pass  # the client went away
    finally:
        stop_wait.cancel()
