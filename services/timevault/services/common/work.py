"""The JetStream streams: the work queue that carries backup jobs from the catalog to snapshotters,
and the event log that keeps job and plan events for replay.

Both are created by whoever needs them first (idempotent) with `replicas` copies: the size of
the NATS cluster in a deployment (``--stream-replicas``, ``$TIMEVAULT_STREAM_REPLICAS``), 1 for
`timevault up`. The catalog owns them: it also brings an existing stream's replicas and
retention to its configuration (`update=True`); other services only create what is missing.
"""

from __future__ import annotations

import asyncio
import logging
import os

from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from timevault.proto import subjects

log = logging.getLogger(__name__)

# Retention of the event log: whichever limit is reached first drops the oldest events.
EVENTS_MAX_AGE = float(os.environ.get("TIMEVAULT_EVENTS_MAX_AGE", 7 * 24 * 3600))  # seconds
EVENTS_MAX_MSGS = int(os.environ.get("TIMEVAULT_EVENTS_MAX_MSGS", 100_000))
EVENTS_MAX_BYTES = int(os.environ.get("TIMEVAULT_EVENTS_MAX_BYTES", 256 * 1024 * 1024))


def work_stream(replicas: int = 1) -> StreamConfig:
    return StreamConfig(name=subjects.WORK_STREAM, subjects=[subjects.WORK_SUBJECTS],
                        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE, num_replicas=replicas)


def events_stream(replicas: int = 1) -> StreamConfig:
    """Job status and plan events (not progress: it is a heartbeat, worthless a minute later)."""
    return StreamConfig(name=subjects.EVENTS_STREAM, subjects=[subjects.JOB_EVENTS_ALL, subjects.PLAN_EVENTS_ALL],
                        retention=RetentionPolicy.LIMITS, storage=StorageType.FILE, num_replicas=replicas,
                        max_age=EVENTS_MAX_AGE, max_msgs=EVENTS_MAX_MSGS, max_bytes=EVENTS_MAX_BYTES,
                        discard=DiscardPolicy.OLD)


async def ensure_stream(nc: NATS, config: StreamConfig, *, update: bool = False) -> None:
    """Create the stream if it does not exist; with `update`, bring an existing one to `config`."""
    js = nc.jetstream()
    for attempt in range(30):
        try:
            await js.add_stream(config)
            return
        except Exception as exc:
            if "already in use" in str(exc):
                if update:
                    await _update(nc, config)
                return
            if attempt == 29:
                raise
            await asyncio.sleep(0.5)


async def _update(nc: NATS, config: StreamConfig) -> None:
    js = nc.jetstream()
    try:
        current = (await js.stream_info(config.name or "")).config
        if (current.num_replicas, current.max_age, current.max_msgs, current.max_bytes) != (
                config.num_replicas, config.max_age, config.max_msgs, config.max_bytes):
            await js.update_stream(config)
            log.info("stream %s: now %s replicas", config.name, config.num_replicas)
    except Exception as exc:  # e.g. more replicas than servers: keep running with what exists
        log.warning("cannot update stream %s: %s", config.name, exc)


async def ensure_work_stream(nc: NATS, replicas: int = 1, *, update: bool = False) -> None:
    """Create the JetStream work queue if it does not exist (idempotent, any service may call it)."""
    await ensure_stream(nc, work_stream(replicas), update=update)


async def ensure_event_stream(nc: NATS, replicas: int = 1, *, update: bool = False) -> None:
    await ensure_stream(nc, events_stream(replicas), update=update)
