"""Account passwords, stored only as argon2id hashes (memory-hard, RFC 9106).

argon2id rather than scrypt: it is the RFC's recommendation for password storage, its PHC string
carries its own parameters (so they can be raised later and old hashes still verify), and
argon2-cffi checks it in constant time. 64 MiB and 3 passes cost ~0.1 s per check here; the
server runs checks one at a time in a thread (`PasswordChecker`), so a burst of sign-ins cannot
take more than one hash's memory at once.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
_hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=2, type=Type.ID)
# Verified against when a name is unknown, so that a wrong name takes as long as a wrong password.
_DUMMY = _hasher.hash("not a password of anyone")


class PasswordPolicyError(ValueError):
    """A new password that is too weak."""


def check_new_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"the password must be at least {MIN_LENGTH} characters")
    return password


def hash_password(password: str) -> str:
    """The PHC string (``$argon2id$v=19$m=65536,t=3,p=2$salt$hash``) for `password`."""
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """True if `password` matches `stored`; a None `stored` (unknown name) costs the same time."""
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class PasswordChecker:
    """Runs argon2 checks in a thread, one at a time (each takes 64 MiB while it runs)."""

    def __init__(self) -> None:
        self._gate = asyncio.Semaphore(1)

    async def verify(self, stored: str | None, password: str) -> bool:
        async with self._gate:
            return await asyncio.to_thread(verify_password, stored, password)
