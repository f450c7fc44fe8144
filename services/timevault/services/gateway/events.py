"""``GET /api/v1/events``: live job status, progress and plan changes as Server-Sent Events.

Each open stream is one NATS subscription on ``tv.events.>`` (or one job's subjects) that lives
exactly as long as the HTTP response, so any gateway copy can serve any client. Events are
``event: job|progress|plan`` with the message JSON as ``data``. Browsers read the stream with
``fetch()`` so the bearer token travels in a header, never in the URL.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from nats.aio.msg import Msg

from timevault.proto import subjects
from timevault.proto.errors import invalid
from timevault.services.gateway.keys import CONFIG, NATS_CLIENT, STOPPING

QUEUE_SIZE = 1000
# How often a quiet stream checks that its client is still there (`timevault backup --wait`
# closes its stream when the job ends; the subscription should not outlive it by a heartbeat).
CLIENT_CHECK = 1.0
KINDS = {"job": "job", "progress": "progress", "plan": "plan"}


def sse_frame(kind: str, data: bytes) -> bytes:
    lines = data.decode("utf-8", "replace").splitlines() or [""]
    return (f"event: {kind}\n" + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


def _kind(subject: str) -> str | None:
    parts = subject.split(".")  # tv.events.<kind>.<id>
    return KINDS.get(parts[2]) if len(parts) == 4 else None


def _subjects(request: web.Request) -> list[str]:
    job = request.query.get("job")
    if job is None:
        return [subjects.EVENTS_ALL]
    try:
        return [subjects.job_event(job), subjects.job_progress(job)]
    except ValueError as exc:
        raise invalid("job must be a job id", "job") from exc


async def stream_events(request: web.Request) -> web.StreamResponse:
    nc = request.app[NATS_CLIENT]
    queue: asyncio.Queue[Msg] = asyncio.Queue(QUEUE_SIZE)

    async def on_message(msg: Msg) -> None:
        if queue.full():  # a slow reader loses the oldest events rather than growing memory
            queue.get_nowait()
        queue.put_nowait(msg)

    subs = [await nc.subscribe(subject, cb=on_message) for subject in _subjects(request)]
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


async def _pump(request: web.Request, response: web.StreamResponse, queue: asyncio.Queue[Msg]) -> None:
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
            msg = get.result()
            kind = _kind(msg.subject)
            if kind is not None:
                await response.write(sse_frame(kind, msg.data))
                last_write = loop.time()
    except ConnectionResetError:
        pass  # the client went away
    finally:
        stop_wait.cancel()
