"""Which names a tree may hold: one path component each, never a way out of its folder.

Restore refuses the others (a hostile repository must not write outside the target), and
check reports them as damage; both use this one rule.
"""

from __future__ import annotations

import os


def name_problem(name: bytes) -> str | None:
    """Why `name` cannot be a file or folder name in a tree, or None when it can."""
    if not name:
        return "an empty name"
    if name in (b".", b".."):
        return f"the name {os.fsdecode(name)!r}"
    if b"/" in name:
        return f"the name {os.fsdecode(name)!r} contains '/'"
    if b"\0" in name:
        return f"the name {os.fsdecode(name)!r} contains a NUL byte"
    return None


def safe_name(name: bytes) -> bool:
    return name_problem(name) is None
