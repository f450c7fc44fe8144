"""The Space's HTTP API (``/space/v1``): device sign-in, objects, and the account holder's calls.

Devices (bearer token) reach only their own account's repositories: the account comes from the
token, never from the URL, so another account's repository cannot even be named (it is 404).

=======================================  ========  =========================================
path                                     who       what
=======================================  ========  =========================================
POST /space/v1/device/code               anyone    RFC 8628 device authorization request
POST /space/v1/token                     anyone    RFC 8628 device access token request
POST /space/v1/token/revoke              device    sign this device out (revoke its token)
GET  /space/v1/account                   both      account, quota, usage per repository
GET  /space/v1/repos/{repo}/objects      device    list (``prefix``, ``after``, ``limit``)
PUT|GET|HEAD|DELETE …/objects/{name}     device    write, read (``Range``), stat, delete
POST /space/v1/repos/{repo}/delete       device    delete up to 1000 objects
POST|GET|DELETE /space/v1/session        holder    sign in (name, password) / who / sign out
GET  /space/v1/device/lookup             holder    the device waiting for a user code
POST /space/v1/device/approve            holder    approve or deny it
GET  /space/v1/devices, DELETE …/{id}    holder    signed-in devices; revoke one
GET  /space/v1/trash                     holder    deleted objects (restorable)
POST /space/v1/trash/restore|empty       holder    restore, or remove for good
=======================================  ========  =========================================
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from typing import Any

from aiohttp import web

from timevault.core.storage import InvalidObjectName, StorageError, check_name
from timevault.space.auth import (
    SESSION_COOKIE,
    SESSION_IDLE,
    bearer_token,
    device_owner,
    new_device_token,
    token_digest,
)
from timevault.space.device import TooManyPending, format_user_code, normalize_user_code
from timevault.space.errors import OAuthError, SpaceError, invalid, not_found
from timevault.space.state import STATE, SpaceState

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MAX_JSON = 256 * 1024
LIST_LIMIT = 1000
DELETE_BATCH = 1000
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def _state(request: web.Request) -> SpaceState:
    return request.app[STATE]


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(value), content_type="application/json",
                        headers=headers)


def base_url(request: web.Request) -> str:
    config = _state(request).config
    return (config.public_url or f"{request.scheme}://{request.host}").rstrip("/")


async def _read_json(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_JSON:
        raise SpaceError(413, "too_large", "the request body is too large")
    data = await request.content.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise SpaceError(413, "too_large", "the request body is too large")
    try:
        value = json.loads(data or b"{}")
    except ValueError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise invalid("the request body must be a JSON object")
    return value


async def _params(request: web.Request) -> dict[str, str]:
    """OAuth parameters: a form body (RFC 6749 §4.1.3 says so), or JSON for convenience."""
    if request.content_type == "application/json":
        return {k: v for k, v in (await _read_json(request)).items() if isinstance(v, str)}
    if request.content_length is not None and request.content_length > MAX_JSON:
        raise OAuthError("invalid_request", "the request body is too large")
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _repo(request: web.Request) -> str:
    repo = request.match_info["repo"]
    if not _REPO.fullmatch(repo):
        raise invalid("a repository name is 1..64 letters, digits, '.', '_' or '-', starting with a letter "
                      "or digit", "repo")
    return repo


def _name(value: str) -> str:
    try:
        return check_name(value)
    except InvalidObjectName as exc:
        raise invalid(str(exc), "name") from exc


def _client_label(device_name: str | None) -> str:
    name = "".join(ch for ch in (device_name or "") if unicodedata.category(ch)[0] not in "CZ" or ch == " ")
    name = " ".join(name.split())[:64]
    return f"TimeVault on {name}" if name else "TimeVault (unnamed device)"


# --- device sign-in (RFC 8628) ---------------------------------------------------------------


async def device_code(request: web.Request) -> web.Response:
    state = _state(request)
    params = await _params(request)
    try:
        code, grant = state.flows.start(_client_label(params.get("device_name")))
    except TooManyPending as exc:
        raise OAuthError("slow_down", str(exc), 429) from exc
    base = base_url(request)
    user_code = format_user_code(grant.user_code)
    return _json({
        "device_code": code,
        "user_code": user_code,
        "verification_uri": f"{base}/device",
        "verification_uri_complete": f"{base}/device?user_code={user_code}",
        "expires_in": state.flows.expires_in_seconds(grant),
        "interval": int(grant.interval),
    }, headers={"Cache-Control": "no-store"})


_POLL_TEXT = {
    "authorization_pending": "waiting for the account holder to approve this device",
    "slow_down": "polling too fast; wait 5 s longer between requests",
    "expired_token": "the code expired before it was approved; ask for a new one",
    "access_denied": "the account holder denied this device",
    "invalid_grant": "unknown or already used device code",
}


async def token(request: web.Request) -> web.Response:
    state = _state(request)
    params = await _params(request)
    grant_type = params.get("grant_type")
    if grant_type is not None and grant_type != DEVICE_GRANT:
        raise OAuthError("unsupported_grant_type", f"only {DEVICE_GRANT} is supported")
    code = params.get("device_code")
    if not code:
        raise OAuthError("invalid_request", "device_code is required")
    result, grant = state.flows.poll(code)
    if result != "approved":
        raise OAuthError(result, _POLL_TEXT[result])
    assert grant is not None and grant.account_id is not None
    secret = new_device_token()
    account = await state.db.run(state.db.db.account, grant.account_id)
    if account is None:
        raise OAuthError("access_denied", "the account was removed")
    await state.db.run(state.db.db.add_token, account.id, token_digest(secret), grant.client)
    return _json({"access_token": secret, "token_type": "Bearer", "account": account.name,
                  "space": base_url(request)}, headers={"Cache-Control": "no-store"})


async def revoke_self(request: web.Request) -> web.Response:
    state = _state(request)
    secret = bearer_token(request)
    if secret is None:
        raise SpaceError(401, "unauthorized", "give the device token to revoke in 'Authorization: Bearer …'")
    revoked = await state.db.run(state.db.db.delete_token_hash, token_digest(secret))
    return _json({"revoked": revoked})


# --- account ---------------------------------------------------------------------------------


async def account(request: web.Request) -> web.Response:
    state = _state(request)
    session = state.sessions.get(request) if bearer_token(request) is None else None
    if session is not None:
        account_id = session.account_id
    else:
        account_id = (await device_owner(request, state.db)).account_id
    found = await state.db.run(state.db.db.account, account_id)
    if found is None:
        raise SpaceError(401, "unauthorized", "this account no longer exists")
    repos = await state.db.run(state.db.db.repo_usage, account_id)
    return _json({
        "account": found.name,
        "quota": found.quota,
        "used": found.used,
        "free": None if found.quota is None else max(0, found.quota - found.used),
        "trash_days": state.config.trash_days,
        "repos": [{"name": r.name, "objects": r.objects, "size": r.size, "trash_objects": r.trash_objects,
                   "trash_size": r.trash_size} for r in repos],
    })


# --- objects ---------------------------------------------------------------------------------


async def put_object(request: web.Request) -> web.Response:
    state = _state(request)
    owner = await device_owner(request, state.db)
    repo, name = _repo(request), _name(request.match_info["name"])
    size = request.content_length
    if size is None:
        raise SpaceError(411, "length_required", "a write needs a Content-Length header (no chunked bodies)")
    if size > state.config.max_object:
        raise SpaceError(413, "too_large", f"objects are at most {state.config.max_object} bytes")
    # If-None-Match: * (RFC 9110 §13.1.2): create only, never replace (412 when the name is taken).
    exclusive = request.headers.get("If-None-Match", "").strip() == "*"
    stored = await state.store.put(owner.account_id, repo, name, size, request.content, exclusive=exclusive)
    return _json({"name": name, "size": stored.size}, status=200 if stored.unchanged else 201)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(offset, length) for a ``Range: bytes=a-b`` header; None for the whole object."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        raise SpaceError(416, "invalid_range", "only one 'bytes=START-[END]' range is supported",
                         headers={"Content-Range": f"bytes */{size}"})
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else size - 1
    if start >= size or end < start:
        raise SpaceError(416, "invalid_range", f"the range starts at or after the end ({size} bytes)",
                         headers={"Content-Range": f"bytes */{size}"})
    return start, min(end, size - 1) - start + 1


async def get_object(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    owner = await device_owner(request, state.db)
    repo, name = _repo(request), _name(request.match_info["name"])
    row = await state.store.find(owner.account_id, repo, name)
    wanted = _byte_range(request.headers.get("Range"), row.size)
    offset, length = wanted or (0, row.size)
    response = web.StreamResponse(status=206 if wanted else 200)
    response.content_type = "application/octet-stream"
    response.content_length = length
    response.headers["Accept-Ranges"] = "bytes"
    if wanted:
        response.headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{row.size}"
    # The first piece is read before the headers go out, so a storage failure is still a clean 503.
    first = min(length, state.config.read_piece)
    try:
        head = await state.store.read(row, offset, first) if first else b""
    except StorageError as exc:
        raise SpaceError(503, "unavailable", "the Space's storage is unavailable; try again") from exc
    await response.prepare(request)
    if head:
        await response.write(head)
    if length > first:
        await state.store.stream(row, offset + first, length - first, response.write)
    await response.write_eof()
    return response


async def head_object(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    owner = await device_owner(request, state.db)
    repo, name = _repo(request), _name(request.match_info["name"])
    row = await state.store.find(owner.account_id, repo, name)
    response = web.StreamResponse(status=200, headers={"X-Object-Size": str(row.size), "Accept-Ranges": "bytes"})
    response.content_length = row.size
    await response.prepare(request)  # HEAD: headers only
    await response.write_eof()
    return response


async def delete_object(request: web.Request) -> web.Response:
    state = _state(request)
    owner = await device_owner(request, state.db)
    repo, name = _repo(request), _name(request.match_info["name"])
    await state.store.delete(owner.account_id, repo, [name])
    return web.Response(status=204)


async def delete_objects(request: web.Request) -> web.Response:
    state = _state(request)
    owner = await device_owner(request, state.db)
    repo = _repo(request)
    names = (await _read_json(request)).get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise invalid("names must be a list of object names", "names")
    if len(names) > DELETE_BATCH:
        raise invalid(f"at most {DELETE_BATCH} names per request", "names")
    await state.store.delete(owner.account_id, repo, [_name(n) for n in names])
    return web.Response(status=204)


async def list_objects(request: web.Request) -> web.Response:
    state = _state(request)
    owner = await device_owner(request, state.db)
    repo = _repo(request)
    prefix, after = request.query.get("prefix", ""), request.query.get("after", "")
    limit_text = request.query.get("limit", str(LIST_LIMIT))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= LIST_LIMIT:
        raise invalid(f"limit must be 1..{LIST_LIMIT}", "limit")
    limit = int(limit_text)
    rows = await state.db.run(state.db.db.list_live, owner.account_id, repo, prefix, after, limit)
    return _json({"objects": [{"name": n, "size": s} for n, s in rows],
                  "next": rows[-1][0] if len(rows) == limit else None})


# --- the account holder: session, approving devices, devices, trash ---------------------------


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


async def sign_in(request: web.Request) -> web.Response:
    state = _state(request)
    body = await _read_json(request)
    user, password = body.get("user"), body.get("password")
    if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
        raise invalid("give user and password")
    state.limiter.check(_address(request))
    found = await state.db.run(state.db.db.account_by_name, user)
    if not await state.passwords.verify(found.password if found else None, password) or found is None:
        state.limiter.failed(_address(request))
        raise SpaceError(401, "unauthorized", "wrong name or password")
    session = state.sessions.create(found.id, found.name)
    response = _json({"account": found.name, "csrf": session.csrf})
    response.set_cookie(SESSION_COOKIE, session.id, httponly=True, samesite="Strict", path="/",
                        secure=state.config.tls, max_age=int(SESSION_IDLE))
    return response


async def who(request: web.Request) -> web.Response:
    session = _state(request).sessions.require(request)
    return _json({"account": session.account_name, "csrf": session.csrf})


async def sign_out(request: web.Request) -> web.Response:
    _state(request).sessions.drop(request)
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def device_lookup(request: web.Request) -> web.Response:
    state = _state(request)
    session = state.sessions.require(request)
    key = f"lookup:{session.id}"
    state.limiter.check(key)
    typed = request.query.get("user_code", "")
    grant = state.flows.lookup(typed)
    if grant is None:
        state.limiter.failed(key)
        raise not_found("no device is waiting for this code (check it, or it may have expired)", "user_code")
    return _json({"user_code": format_user_code(grant.user_code), "client": grant.client,
                  "expires_in": state.flows.expires_in_seconds(grant)})


async def device_approve(request: web.Request) -> web.Response:
    state = _state(request)
    session = state.sessions.require(request)
    body = await _read_json(request)
    action, typed = body.get("action"), body.get("user_code")
    if action not in ("approve", "deny"):
        raise invalid("action must be approve or deny", "action")
    if not isinstance(typed, str) or normalize_user_code(typed) is None:
        raise invalid("user_code is not a code this Space gives out", "user_code")
    key = f"lookup:{session.id}"
    state.limiter.check(key)
    grant = state.flows.decide(typed, session.account_id, session.account_name, action == "approve")
    if grant is None:
        state.limiter.failed(key)
        raise not_found("no device is waiting for this code (check it, or it may have expired)", "user_code")
    return _json({"status": "approved" if action == "approve" else "denied", "client": grant.client,
                  "account": session.account_name})


async def list_devices(request: web.Request) -> web.Response:
    state = _state(request)
    session = state.sessions.require(request)
    return _json({"devices": await state.db.run(state.db.db.list_tokens, session.account_id)})


async def revoke_device(request: web.Request) -> web.Response:
    state = _state(request)
    session = state.sessions.require(request)
    if not await state.db.run(state.db.db.delete_token, session.account_id, request.match_info["device_id"]):
        raise not_found("no such device", "device_id")
    return web.Response(status=204)


async def list_trash(request: web.Request) -> web.Response:
    state = _state(request)
    session = state.sessions.require(request)
    limit, offset = request.query.get("limit", "100"), request.query.get("offset", "0")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000 or not offset.isdigit():
        raise invalid("limit must be 1..1000 and offset a whole number")
    rows, total = await state.db.run(state.db.db.list_trash, session.account_id, int(limit), int(offset))
    keep = state.config.trash_days * 86400
    return _json({"total": total, "objects": [
        {"id": r.version, "repo": r.repo, "name": r.name, "size": r.size, "deleted": r.deleted,
         "expires": (r.deleted or time.time()) + keep} for r in rows]})


def _ids(body: dict[str, Any], required: bool) -> list[str] | None:
    ids = body.get("ids")
    if ids is None and not required:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 10_000:
        raise invalid("ids must be a list of trash entry ids", "ids")
    return ids


async def restore_trash(request: web.Request) -> web.Response:
    state = _state(request)
    session = state.sessions.require(request)
    ids = _ids(await _read_json(request), required=True) or []
    restored = await state.db.run(state.db.db.restore_trash, session.account_id, ids)
    return _json({"restored": restored})


async def empty_trash(request: web.Request) -> web.Response:
    state = _state(request)
    session = state.sessions.require(request)
    ids = _ids(await _read_json(request), required=False)
    purged = await state.db.run(state.db.db.empty_trash, session.account_id, ids)
    state.store.purge_soon(purged)
    return _json({"removed": len(purged)})


async def health(_request: web.Request) -> web.Response:
    return _json({"status": "ok"})


def add_routes(app: web.Application) -> None:
    r = app.router
    v1 = "/space/v1"
    objects = v1 + "/repos/{repo}/objects"
    r.add_get(v1 + "/health", health)
    r.add_post(v1 + "/device/code", device_code)
    r.add_post(v1 + "/token", token)
    r.add_post(v1 + "/token/revoke", revoke_self)
    r.add_get(v1 + "/account", account)
    r.add_get(objects, list_objects)
    r.add_route("HEAD", objects + "/{name:.+}", head_object)
    r.add_get(objects + "/{name:.+}", get_object, allow_head=False)
    r.add_put(objects + "/{name:.+}", put_object)
    r.add_delete(objects + "/{name:.+}", delete_object)
    r.add_post(v1 + "/repos/{repo}/delete", delete_objects)
    r.add_post(v1 + "/session", sign_in)
    r.add_get(v1 + "/session", who)
    r.add_delete(v1 + "/session", sign_out)
    r.add_get(v1 + "/device/lookup", device_lookup)
    r.add_post(v1 + "/device/approve", device_approve)
    r.add_get(v1 + "/devices", list_devices)
    r.add_delete(v1 + "/devices/{device_id}", revoke_device)
    r.add_get(v1 + "/trash", list_trash)
    r.add_post(v1 + "/trash/restore", restore_trash)
    r.add_post(v1 + "/trash/empty", empty_trash)
