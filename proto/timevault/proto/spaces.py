"""Signing this TimeVault in to a TimeVault Space, through the catalog.

The catalog keeps one device token per Space (never a backup password) and runs the device
sign-in (RFC 8628) in the background: ``tv.catalog.space.login`` answers with the code to show
at once, ``tv.catalog.space.status`` follows it until the account holder approved or denied it.
A Space is named by its URL (``https://host[:port]``, ``http://LOOPBACK:port``, or any
``space://`` location on it); the catalog keys sign-ins by the Space's base URL.
"""

from __future__ import annotations

from typing import Literal

import msgspec

SpaceState = Literal["pending", "signed_in", "signed_out", "denied", "expired", "failed"]


class SpaceRef(msgspec.Struct, kw_only=True):
    """Subjects ``tv.catalog.space.login|status|logout``; HTTP body ``{"space": URL}``."""

    space: str
    """The Space: ``https://host[:port]``, ``http://127.0.0.1:port``, or a ``space://`` location on it."""


class SpaceListRequest(msgspec.Struct, kw_only=True):
    """Subject ``tv.catalog.space.list``."""


class SpaceLogin(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.space.login``: what to show the person (RFC 8628 §3.2)."""

    space: str
    """The Space's base URL."""
    user_code: str
    """The code to type on the verification page, like ``WDJB-MJHT``."""
    verification_uri: str
    """The page where the account holder approves this TimeVault."""
    verification_uri_complete: str
    """The page with the code filled in (for the QR code)."""
    expires_in: int
    """Seconds until the code expires."""
    interval: int
    """Seconds between the catalog's polls of the Space."""


class SpaceStatus(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.space.status`` and ``logout``: the sign-in to one Space."""

    space: str
    """The Space's base URL."""
    status: SpaceState
    """``pending`` (waiting for approval), ``signed_in``, ``signed_out`` (never, logged out, or the
    token was revoked), ``denied``, ``expired`` (the code ran out) or ``failed``."""
    account: str | None = None
    """The Space account this TimeVault is signed in to."""
    quota: int | None = None
    """The account's quota in bytes (None: unlimited or unknown)."""
    used: int | None = None
    """Bytes the account uses on the Space (trash included)."""
    free: int | None = None
    """Bytes left under the quota (None: unlimited or unknown)."""
    message: str | None = None
    """Why it is not signed in, or why the numbers are missing (Space unreachable)."""
    user_code: str | None = None
    """While pending: the code to type."""
    verification_uri_complete: str | None = None
    """While pending: the page with the code filled in."""


class SpaceList(msgspec.Struct, kw_only=True):
    """Reply to ``tv.catalog.space.list``: every Space this TimeVault signed in to or is signing in to."""

    spaces: list[SpaceStatus]
    """One entry per Space."""
