"""Delivering notifications: a JSON POST to each URL, retried with backoff, the outcome recorded.

A delivery runs in the background (the catalog's request that caused it never waits for a slow
receiver). Each URL is tried up to `attempts` times; a 2xx answer is success, anything else
(another status, a refused connection, a timeout) is retried after `backoff`, doubling up to
`max_backoff`. The outcome (`NotifyDelivery`: ok, attempts, the last HTTP status or error) goes to
`on_done`, which the catalog stores as the plan's `notify_last`. The URL itself is never logged
with its path or query (webhook URLs often hold a secret there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import msgspec

from timevault.proto.notify import Notification
from timevault.proto.plans import NotifyDelivery
from timevault.services.common.util import utcnow

log = logging.getLogger(__name__)
USER_AGENT = "TimeVault-notify/1"

Done = Callable[[NotifyDelivery], Awaitable[None]]


@dataclass
class NotifyConfig:
    urls: list[str] = field(default_factory=list)
    """Notified for every plan (``timevault up --notify``)."""
    attempts: int = 5
    """Tries per URL."""
    backoff: float = 2.0
    """Seconds before the first retry; doubled each time."""
    max_backoff: float = 60.0
    timeout: float = 10.0
    """Seconds one POST may take."""


def target_of(url: str) -> str:
    """``https://hooks.example.org``: enough to tell URLs apart, without a secret path or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "?"
    return f"{parts.scheme}://{host}{port}"


@dataclass
class _Outcome:
    url: str
    ok: bool
    attempts: int
    http_status: int | None = None
    error: str | None = None


class Notifier:
    def __init__(self, config: NotifyConfig) -> None:
        self.config = config
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def urls_for(self, plan_urls: Sequence[str]) -> list[str]:
        return list(dict.fromkeys([*plan_urls, *self.config.urls]))

    def send(self, notification: Notification, urls: Sequence[str], on_done: Done) -> None:
        """Deliver in the background; `on_done` gets the outcome (nothing happens without URLs)."""
        if not urls:
            return
        task = asyncio.create_task(self._deliver(msgspec.json.encode(notification), list(urls), notification,
                                                 on_done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _deliver(self, body: bytes, urls: list[str], notification: Notification, on_done: Done) -> None:
        outcomes = await asyncio.gather(*(self._post(url, body) for url in urls))
        failed = [o for o in outcomes if not o.ok]
        shown = failed[0] if failed else max(outcomes, key=lambda o: o.attempts)
        delivery = NotifyDelivery(at=utcnow(), status=notification.status, ok=not failed,
                                  attempts=max(o.attempts for o in outcomes), job_id=notification.job,
                                  target=target_of(shown.url), http_status=shown.http_status, error=shown.error)
        for outcome in failed:
            log.warning("notification for plan %s to %s failed after %d attempts: %s", notification.plan.id,
                        target_of(outcome.url), outcome.attempts, outcome.error)
        try:
            await on_done(delivery)
        except Exception:
            log.exception("cannot record the notification outcome of plan %s", notification.plan.id)

    async def _post(self, url: str, body: bytes) -> _Outcome:
        config = self.config
        delay = config.backoff
        outcome = _Outcome(url, False, 0)
        for attempt in range(1, config.attempts + 1):
            outcome.attempts = attempt
            try:
                async with self._client().post(url, data=body, headers={
                        "Content-Type": "application/json", "User-Agent": USER_AGENT},
                        timeout=aiohttp.ClientTimeout(total=config.timeout), allow_redirects=False) as resp:
                    outcome.http_status = resp.status
                    with contextlib.suppress(Exception):
                        await resp.read()
                    if 200 <= resp.status < 300:
                        outcome.ok, outcome.error = True, None
                        return outcome
                    outcome.error = f"HTTP {resp.status} {resp.reason or ''}".strip()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                outcome.http_status = None
                outcome.error = _reason(exc)
            if attempt < config.attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, config.max_backoff)
        return outcome

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection refused or host unreachable"
    return type(exc).__name__
