"""The names a repository's objects have, and nothing else: what TimeVault may delete.

A location may hold other things next to (or, for a careless choice of folder, around) a
repository. Deleting a repository, or a plan with it, removes only names this module
recognises — the objects `docs/repository-format.md` defines and, in a local folder, the
temporary files a write leaves behind when it is interrupted — and only the folders the
format creates, once they are empty.
"""

from __future__ import annotations

import re

_ID64 = "[0-9a-f]{64}"
_OBJECT = re.compile(
    rf"config|(?:keys|index|snapshots|references|endorsements|forgets|gc)/{_ID64}"
    rf"|data/(?P<fan>[0-9a-f]{{2}})/(?P<pack>{_ID64})|locks/[0-9a-f]{{32}}"
)
# LocalStorage writes `<name>.tmp-<12 hex>` next to the object and renames it into place.
_TEMP = re.compile(r"(?P<object>.+)\.tmp-[0-9a-f]{12}")

FOLDERS = ("keys", "data", "index", "snapshots", "references", "endorsements", "forgets", "gc", "locks")
"""The top-level folders the format creates (``data`` has a subfolder per first two hex digits)."""


def is_object_name(name: str) -> bool:
    """Whether `name` (relative, '/'-separated) is a name the repository format defines."""
    match = _OBJECT.fullmatch(name)
    if match is None:
        return False
    fan, pack = match.group("fan"), match.group("pack")
    return fan is None or pack.startswith(fan)


def is_temp_file(name: str) -> bool:
    """Whether `name` is a local folder's temporary file of an object (an interrupted write)."""
    match = _TEMP.fullmatch(name)
    return match is not None and is_object_name(match.group("object"))


def is_folder(name: str) -> bool:
    """Whether `name` is a folder the format creates (``data``, ``data/ab``, ``index``, …)."""
    parts = name.split("/")
    if len(parts) == 1:
        return parts[0] in FOLDERS
    return len(parts) == 2 and parts[0] == "data" and re.fullmatch("[0-9a-f]{2}", parts[1]) is not None
