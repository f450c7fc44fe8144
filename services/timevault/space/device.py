"""Device sign-in: the OAuth 2.0 Device Authorization Grant (RFC 8628), server side.

A TimeVault asks for a code (``POST /space/v1/device/code``), shows the user code and a QR code
of the verification page, and polls ``POST /space/v1/token``. The account holder opens the page,
signs in and approves or denies "TimeVault on HOST". Pending grants live in memory only: they
last minutes, and a restarted server simply makes the device ask again.

User codes (RFC 8628 §6.1): eight letters from 20 consonants, shown as ``WDJB-MJHT``; no vowels
(so no words), no digits and no I or O (so nothing to confuse with 1 or 0). Input is
case-insensitive and ignores dashes and spaces. 20^8 ≈ 2^34.6 codes against a few guesses a
minute (sign-in is required before a code is even looked up) is plenty for a code that lives
ten minutes.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
SLOW_DOWN_STEP = 5.0  # RFC 8628 §3.5: "the interval MUST be increased by 5 seconds"
# A client that waited its interval may still arrive a hair early by the server's clock.
POLL_TOLERANCE = 0.05
MAX_PENDING = 10_000

PollResult = Literal["authorization_pending", "slow_down", "expired_token", "access_denied", "invalid_grant",
                     "approved"]


def normalize_user_code(text: str) -> str | None:
    """The canonical form (``WDJBMJHT``) of what a person typed, or None if it cannot be a code."""
    code = "".join(ch for ch in text.upper() if ch not in "- \t")
    if len(code) != USER_CODE_LENGTH or any(ch not in USER_CODE_ALPHABET for ch in code):
        return None
    return code


def format_user_code(code: str) -> str:
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"


def new_user_code() -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def _digest(device_code: str) -> bytes:
    return hashlib.sha256(device_code.encode()).digest()


@dataclass
class Grant:
    """One device waiting for its holder's decision."""

    device_hash: bytes
    user_code: str
    client: str
    expires: float
    interval: float
    last_poll: float | None = None
    decision: Literal["approved", "denied"] | None = None
    account_id: str | None = None
    account_name: str | None = None
    created: float = field(default_factory=time.monotonic)


class TooManyPending(Exception):
    """The server holds as many pending grants as it allows; try later."""


class DeviceFlows:
    """The pending grants, by device code digest and by user code."""

    def __init__(self, *, expires_in: float, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.expires_in = expires_in
        self.interval = interval
        self._clock = clock
        self._by_device: dict[bytes, Grant] = {}
        self._by_user: dict[str, Grant] = {}

    def start(self, client: str) -> tuple[str, Grant]:
        """A new grant; returns the device code (secret, never stored) and the grant."""
        self._sweep()
        if len(self._by_device) >= MAX_PENDING:
            raise TooManyPending("too many sign-ins are waiting; try again in a few minutes")
        device_code = secrets.token_urlsafe(32)
        user_code = new_user_code()
        while user_code in self._by_user:
            user_code = new_user_code()
        now = self._clock()
        grant = Grant(_digest(device_code), user_code, client, now + self.expires_in, self.interval, created=now)
        self._by_device[grant.device_hash] = grant
        self._by_user[user_code] = grant
        return device_code, grant

    def poll(self, device_code: str) -> tuple[PollResult, Grant | None]:
        """What the token endpoint answers for `device_code`; "approved" ends the grant."""
        grant = self._by_device.get(_digest(device_code))
        if grant is None:
            return "invalid_grant", None
        now = self._clock()
        if now >= grant.expires:
            self._drop(grant)
            return "expired_token", grant
        if grant.decision == "denied":
            self._drop(grant)
            return "access_denied", grant
        if grant.decision == "approved":
            self._drop(grant)
            return "approved", grant
        last, grant.last_poll = grant.last_poll, now
        if last is not None and now - last < grant.interval - POLL_TOLERANCE:
            grant.interval += SLOW_DOWN_STEP
            return "slow_down", grant
        return "authorization_pending", grant

    def lookup(self, user_code: str) -> Grant | None:
        """The undecided, unexpired grant with this user code (any spelling), or None."""
        code = normalize_user_code(user_code)
        grant = self._by_user.get(code) if code else None
        if grant is None or grant.decision is not None or self._clock() >= grant.expires:
            return None
        return grant

    def decide(self, user_code: str, account_id: str, account_name: str, approve: bool) -> Grant | None:
        grant = self.lookup(user_code)
        if grant is None:
            return None
        grant.decision = "approved" if approve else "denied"
        grant.account_id, grant.account_name = account_id, account_name
        return grant

    def expires_in_seconds(self, grant: Grant) -> int:
        return max(0, math.ceil(grant.expires - self._clock()))

    def _drop(self, grant: Grant) -> None:
        self._by_device.pop(grant.device_hash, None)
        self._by_user.pop(grant.user_code, None)

    def _sweep(self) -> None:
        now = self._clock()
        for grant in [g for g in self._by_device.values() if now >= g.expires]:
            self._drop(grant)
