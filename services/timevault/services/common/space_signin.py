"""Signing a TimeVault in to a Space: the device side of RFC 8628, and the calls around it.

Used by the catalog (sign-in through the running system) and by ``timevault space login
--token-file`` (no system). The flow: `request_code` gives a user code and the verification
page to show (as text and as a QR code); `wait_for_token` polls the token endpoint at the
interval the Space asks for, 5 s slower after each ``slow_down``, until the account holder
approves (a device token), denies or the code expires (`SignInFailed`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from timevault.core.storage.space import SpaceEndpoint, SpaceSignedOut, ssl_for

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CLIENT_ID = "timevault"
SLOW_DOWN_STEP = 5
TIMEOUT = aiohttp.ClientTimeout(total=30)


class SignInFailed(Exception):
    """The sign-in ended without a token: `code` is ``access_denied``, ``expired_token``,
    ``unreachable`` or another RFC 6749 error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DeviceCode:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


@dataclass(frozen=True)
class SignedIn:
    space: str
    account: str
    token: str


def device_name() -> str:
    return socket.gethostname() or "this machine"


async def _call(endpoint: SpaceEndpoint, method: str, path: str, *, token: str | None = None,
                form: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request to the Space; (status, decoded JSON body or None)."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connector = aiohttp.TCPConnector(ssl=ssl_for(endpoint.base_url, endpoint.ca))
        async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as http, \
                http.request(method, endpoint.base_url + path, data=form, headers=headers,
                             allow_redirects=False) as response:
            text = await response.read()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = None
            return response.status, body
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise SignInFailed("unreachable", f"cannot reach the Space at {endpoint.base_url}: {exc}") from exc


def _error(status: int, body: Any) -> tuple[str, str]:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, str):
            return error, str(body.get("error_description") or error)
        if isinstance(error, dict):
            return str(error.get("code") or "error"), str(error.get("message") or "")
    return "error", f"the Space answered HTTP {status}"


async def request_code(endpoint: SpaceEndpoint, name: str | None = None) -> DeviceCode:
    """Start a sign-in: the codes to show the person (RFC 8628 §3.1–3.2)."""
    status, body = await _call(endpoint, "POST", "/space/v1/device/code",
                               form={"client_id": CLIENT_ID, "device_name": name or device_name()})
    if status != 200 or not isinstance(body, dict):
        code, message = _error(status, body)
        raise SignInFailed(code, f"the Space refused to start a sign-in: {message}")
    try:
        return DeviceCode(str(body["device_code"]), str(body["user_code"]), str(body["verification_uri"]),
                          str(body.get("verification_uri_complete") or body["verification_uri"]),
                          int(body["expires_in"]), int(body.get("interval", 5)))
    except (KeyError, TypeError, ValueError) as exc:
        raise SignInFailed("invalid_response", f"the Space's answer lacks {exc}") from exc


async def wait_for_token(endpoint: SpaceEndpoint, code: DeviceCode, *,
                         sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> SignedIn:
    """Poll until approved (RFC 8628 §3.4–3.5); raises SignInFailed when denied or expired."""
    interval = max(1, code.interval)
    deadline = time.monotonic() + code.expires_in
    while True:
        await sleep(interval)
        try:
            status, body = await _call(endpoint, "POST", "/space/v1/token", form={
                "grant_type": DEVICE_GRANT, "device_code": code.device_code, "client_id": CLIENT_ID})
        except SignInFailed:
            if time.monotonic() > deadline:
                raise
            continue  # the Space may be restarting; the code outlives a short outage
        if status == 200 and isinstance(body, dict) and body.get("access_token"):
            return SignedIn(endpoint.base_url, str(body.get("account") or ""), str(body["access_token"]))
        error, message = _error(status, body)
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += SLOW_DOWN_STEP
            continue
        if error == "access_denied":
            raise SignInFailed(error, "the account holder denied this sign-in")
        if error == "expired_token":
            raise SignInFailed(error, "the sign-in code expired before it was approved; sign in again")
        raise SignInFailed(error, f"the Space refused the sign-in: {message}")


async def revoke(endpoint: SpaceEndpoint, token: str) -> bool:
    """Sign this device out: the Space forgets the token (True if it knew it)."""
    status, body = await _call(endpoint, "POST", "/space/v1/token/revoke", token=token)
    if status == 401:
        return False
    if status != 200:
        raise SignInFailed(*_error(status, body))
    return bool(isinstance(body, dict) and body.get("revoked"))


async def account_info(endpoint: SpaceEndpoint, token: str) -> dict[str, Any]:
    """``{"account", "quota", "used", "free", "repos", …}``; SpaceSignedOut if the token is refused."""
    status, body = await _call(endpoint, "GET", "/space/v1/account", token=token)
    if status == 401:
        _, message = _error(status, body)
        raise SpaceSignedOut(f"{endpoint.base_url}: signed out of Space: {message}")
    if status != 200 or not isinstance(body, dict):
        raise SignInFailed(*_error(status, body))
    return body
