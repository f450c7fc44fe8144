"""What every request handler of the Space reaches through ``request.app[STATE]``."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from timevault.space.auth import Sessions, SignInLimiter
from timevault.space.config import SpaceConfig
from timevault.space.db import DBThread
from timevault.space.device import DeviceFlows
from timevault.space.objects import ObjectStore
from timevault.space.passwords import PasswordChecker


@dataclass
class SpaceState:
    config: SpaceConfig
    db: DBThread
    store: ObjectStore
    flows: DeviceFlows
    sessions: Sessions
    limiter: SignInLimiter
    passwords: PasswordChecker


STATE: web.AppKey[SpaceState] = web.AppKey("space_state", SpaceState)
