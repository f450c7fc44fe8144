"""`rpc.request_retrying` against a real nats-server: what it waits out, and what it does not."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from tests.services.conftest import NatsServer
from timevault.proto import wire
from timevault.proto.errors import ServiceError
from timevault.proto.plans import PlanRef
from timevault.services.common import retry, rpc

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def clients(nats_server: NatsServer) -> AsyncIterator[tuple[NATS, NATS]]:
    """A caller and a separate connection for the service (as in production)."""
    caller = await nats.connect(nats_server.url)
    service = await nats.connect(nats_server.url)
    yield caller, service
    await caller.close()
    await service.close()


def _subject() -> str:
    return f"tv.test.retry.{secrets.token_hex(4)}"


async def test_a_request_made_before_the_service_starts_succeeds_once_it_does(
        clients: tuple[NATS, NATS]) -> None:
    caller, service = clients
    subject = _subject()
    calls: list[str] = []

    async def handler(req: PlanRef) -> PlanRef:
        calls.append(req.plan)
        return PlanRef(plan=req.plan + " answered")

    request = asyncio.create_task(rpc.request_retrying(caller, subject, PlanRef(plan="early"), PlanRef,
                                                       give_up_after=20))
    await asyncio.sleep(0.8)  # nobody answers yet: several attempts, each "no responders"
    assert not request.done()
    await rpc.serve(service, subject, PlanRef, handler)
    reply = await asyncio.wait_for(request, 5)
    assert reply.plan == "early answered"
    assert calls == ["early"]  # "no responders" means it was never delivered: handled once


async def test_unavailable_replies_are_retried(clients: tuple[NATS, NATS]) -> None:
    caller, service = clients
    subject = _subject()
    calls = 0

    async def handler(req: PlanRef) -> PlanRef:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ServiceError("unavailable", "JetStream is starting")
        return req

    await rpc.serve(service, subject, PlanRef, handler)
    reply = await rpc.request_retrying(caller, subject, PlanRef(plan="p"), PlanRef, give_up_after=10)
    assert reply.plan == "p"
    assert calls == 3


async def test_a_lost_reply_is_retried_after_the_timeout(clients: tuple[NATS, NATS]) -> None:
    """A service that dies while handling a request never replies; the next attempt reaches its successor."""
    caller, service = clients
    subject = _subject()
    seen: list[bytes] = []

    async def first_one_lost(msg: Msg) -> None:
        seen.append(msg.data)
        if len(seen) > 1:
            await msg.respond(wire.encode(PlanRef(plan="second")))

    await service.subscribe(subject, cb=first_one_lost)
    await service.flush()
    started = time.monotonic()
    reply = await rpc.request_retrying(caller, subject, PlanRef(plan="p"), PlanRef, timeout=0.3,
                                       give_up_after=10)
    assert reply.plan == "second"
    assert len(seen) == 2 and seen[0] == seen[1]  # the same request, sent again
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("code", ["invalid", "not_found", "conflict", "busy", "unauthorized", "internal"])
async def test_an_answer_other_than_unavailable_is_raised_at_once(clients: tuple[NATS, NATS], code: str) -> None:
    caller, service = clients
    subject = _subject()
    calls = 0

    async def handler(_req: PlanRef) -> PlanRef:
        nonlocal calls
        calls += 1
        raise ServiceError(code, f"refused with {code}", "plan")

    await rpc.serve(service, subject, PlanRef, handler)
    started = time.monotonic()
    with pytest.raises(ServiceError) as raised:
        await rpc.request_retrying(caller, subject, PlanRef(plan="p"), PlanRef, give_up_after=10)
    assert (raised.value.code, raised.value.message, raised.value.field) == (code, f"refused with {code}", "plan")
    assert calls == 1
    assert time.monotonic() - started < retry.FIRST_DELAY + 1


async def test_it_gives_up_after_the_deadline(clients: tuple[NATS, NATS]) -> None:
    caller, _ = clients
    started = time.monotonic()
    with pytest.raises(ServiceError) as raised:
        await rpc.request_retrying(caller, _subject(), PlanRef(plan="p"), PlanRef, give_up_after=0.7)
    elapsed = time.monotonic() - started
    assert raised.value.code == "unavailable"
    assert "no service answers" in raised.value.message
    assert 0.7 <= elapsed < 3


async def test_other_exceptions_are_not_retried_and_codes_can_be_widened() -> None:
    attempts = 0

    async def broken() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await retry.while_unavailable(broken, give_up_after=10)
    assert attempts == 1

    retried: list[str] = []
    results: Iterator[ServiceError | str] = iter([ServiceError("not_found", "no session"),
                                                  ServiceError("unavailable", "gone"), "done"])

    async def flaky() -> str:
        result = next(results)
        if isinstance(result, ServiceError):
            raise result
        return result

    assert await retry.while_unavailable(flaky, give_up_after=10, codes={"unavailable", "not_found"},
                                         on_retry=lambda exc: retried.append(exc.code)) == "done"
    assert retried == ["not_found", "unavailable"]
