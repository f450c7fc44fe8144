"""``/api/v1/spaces``: signing this TimeVault in to a TimeVault Space (the catalog does the work).

``POST /api/v1/spaces/login`` answers at once with the user code, the verification page and a QR
code of it (SVG, for the web UI); the sign-in completes in the background, and
``GET /api/v1/spaces/status?space=URL`` tells when it did (``signed_in``), or that it was denied
or expired. A Space is named by its URL, e.g. ``https://space.example.org``.
"""

from __future__ import annotations

import re

import msgspec
from aiohttp import web

from timevault.proto import subjects
from timevault.proto.errors import invalid
from timevault.proto.spaces import SpaceList, SpaceListRequest, SpaceLogin, SpaceRef, SpaceStatus
from timevault.services.gateway.routes import SLOW, Endpoint, body, call, reply

MAX_URL = 2048
SPACE_URL = re.compile(r"^(https?|space|space\+http)://\S+$")
"""What a Space URL looks like before it is parsed (the OpenAPI pattern of the ``space`` parameter)."""


class SpaceLoginReply(SpaceLogin, kw_only=True):
    """``POST /api/v1/spaces/login``: the codes to show, and a QR code of the verification page."""

    qr_svg: str
    """An SVG drawing of a QR code for `verification_uri_complete` (to scan with a phone)."""


def qr_svg(text: str) -> str:
    """A standalone SVG document (with its namespace, so it also works as an image's data URL)."""
    import io

    import segno  # only when someone signs in

    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", xmldecl=False, scale=5, border=2, title="QR code to sign in")
    return out.getvalue().decode()


def _space_ref(value: str | None) -> SpaceRef:
    if not value or len(value) > MAX_URL or not SPACE_URL.match(value):
        raise invalid("give the Space's URL, like https://space.example.org", "space")
    return SpaceRef(space=value)


async def login(request: web.Request) -> web.Response:
    ref = _space_ref((await body(request, SpaceRef)).space)
    started = await call(request, subjects.SPACE_LOGIN, ref, SpaceLogin, SLOW)
    return reply(SpaceLoginReply(**msgspec.structs.asdict(started),
                                 qr_svg=qr_svg(started.verification_uri_complete)))


async def status(request: web.Request) -> web.Response:
    ref = _space_ref(request.query.get("space"))
    return reply(await call(request, subjects.SPACE_STATUS, ref, SpaceStatus))


async def list_spaces(request: web.Request) -> web.Response:
    return reply((await call(request, subjects.SPACE_LIST, SpaceListRequest(), SpaceList)).spaces)


async def logout(request: web.Request) -> web.Response:
    ref = _space_ref((await body(request, SpaceRef)).space)
    return reply(await call(request, subjects.SPACE_LOGOUT, ref, SpaceStatus, SLOW))


def space_endpoints() -> list[Endpoint]:
    return [
        Endpoint("GET", "/api/v1/spaces", list_spaces, "The Spaces this TimeVault is signed in to (account, "
                 "quota, free space) or signing in to", list[SpaceStatus]),
        Endpoint("POST", "/api/v1/spaces/login", login, "Sign in to a Space: the user code, the verification "
                 "page and its QR code; approval happens on the Space", SpaceLoginReply, 200, SpaceRef, (400, 503)),
        Endpoint("GET", "/api/v1/spaces/status", status, "Where a sign-in stands: pending, signed_in (with the "
                 "account and free space), signed_out, denied or expired", SpaceStatus, errors=(400,),
                 query={"space": "the Space's URL"}),
        Endpoint("POST", "/api/v1/spaces/logout", logout, "Sign out of a Space (its device token is revoked)",
                 SpaceStatus, 200, SpaceRef, (400,)),
    ]
