"""The JetStream work queue that carries backup jobs from the catalog to snapshotters."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from timevault.proto import subjects


async def ensure_work_stream(nc: NATS) -> None:
    """Create the JetStream work queue if it does not exist (idempotent, any service may call it)."""
    js = nc.jetstream()
    config = StreamConfig(name=subjects.WORK_STREAM, subjects=[subjects.WORK_SUBJECTS],
                          retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE)
    for attempt in range(30):
        try:
            await js.add_stream(config)
            return
        except Exception as exc:
            if "already in use" in str(exc):
                return
            if attempt == 29:
                raise
            await asyncio.sleep(0.5)
