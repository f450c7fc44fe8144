"""Retry while a service is unavailable: one policy for every caller that waits out a restart.

Services come and go (a restart, a NATS reconnect, `up` starting them in any order), and a
request made meanwhile fails with a `ServiceError` whose code is ``unavailable``:
`rpc.request` raises it when nobody answers (no responders), when no reply comes in time, and
when the NATS connection fails; a service replies with it when a dependency of its own is down
(say, JetStream). Those are retried. Every other code (``invalid``, ``not_found``,
``conflict``, ``busy``, ``unauthorized``, ``internal``…) is an answer, raised at once; so is
any exception that is not a `ServiceError`.

Retrying resends the request, and a request that timed out may have been handled: retry only
requests whose repetition is harmless (reads, and writes the receiver deduplicates, such as
``JobFinish`` or ``ChunkAdd``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

from timevault.proto.errors import ServiceError

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRY_CODES: frozenset[str] = frozenset({"unavailable"})
"""Error codes that mean "not now": the one failure a retry can cure."""
FIRST_DELAY = 0.1
"""Seconds before the first retry: a service that is just starting answers within a few."""
MAX_DELAY = 1.0
"""The delay doubles per attempt up to this, so a long outage costs one request a second."""


def is_retryable(exc: BaseException, codes: Collection[str] = RETRY_CODES) -> bool:
    """Whether `exc` means the service is unavailable (as opposed to an answer or a bug)."""
    return isinstance(exc, ServiceError) and exc.code in codes


async def while_unavailable(
    attempt: Callable[[], Awaitable[T]],
    *,
    give_up_after: float,
    codes: Collection[str] = RETRY_CODES,
    on_retry: Callable[[ServiceError], None] | None = None,
) -> T:
    """Await ``attempt()`` until it returns, retrying while it raises a retryable `ServiceError`.

    Waits `FIRST_DELAY` seconds after the first failure, doubling up to `MAX_DELAY`. Once
    `give_up_after` seconds have passed the last error is raised; the final attempt starts
    before then and may take its own timeout. `codes` widens the policy for callers that can
    cure more (an upload sender reopens a session the uploader no longer knows: ``not_found``).
    `on_retry` runs before each wait, with the error that caused it.
    """
    deadline = time.monotonic() + give_up_after
    delay = FIRST_DELAY
    while True:
        try:
            return await attempt()
        except ServiceError as exc:
            remaining = deadline - time.monotonic()
            if exc.code not in codes or remaining <= 0:
                raise
            log.debug("retrying in %.1fs: %s", min(delay, remaining), exc)
            if on_retry is not None:
                on_retry(exc)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_DELAY)
