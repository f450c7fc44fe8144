"""``GET /api/v1/folders?path=``: the folder picker of the create and edit forms.

The snapshotter answers (it reads the sources, and the gateway may run on another machine); it
lists only folders under the roots it may back up.
"""

from __future__ import annotations

from aiohttp import web

from timevault.proto import subjects
from timevault.proto.errors import invalid
from timevault.proto.folders import FolderListing, FolderListRequest
from timevault.services.gateway.routes import Endpoint, call, reply


async def list_folders(request: web.Request) -> web.Response:
    path = request.query.get("path")
    if path is not None and (not path.startswith("/") or len(path) > 4096 or "\0" in path):
        raise invalid("path must be an absolute folder path", "path")
    return reply(await call(request, subjects.FOLDERS_LIST, FolderListRequest(path=path), FolderListing))


def folder_endpoints() -> list[Endpoint]:
    return [Endpoint("GET", "/api/v1/folders", list_folders, "Folders this machine may back up: the roots, or "
                     "the subfolders of `path` (for choosing sources)", FolderListing, errors=(400, 404),
                     query={"path": "an absolute folder under one of the roots (absent: the roots)"})]
