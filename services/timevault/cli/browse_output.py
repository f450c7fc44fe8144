"""How `ls`, `diff` and `find` print, for `timevault repo …` and for plans through the services.

Both print the same JSON (the API's `BrowseListing`, `SnapshotDiff` and `FindResult` shapes,
see `timevault.proto.browse`) and the same tables, so a script written against one works with
the other. Every function takes the JSON form as plain dicts and lists.
"""

from __future__ import annotations

import json
import stat
from typing import Any

from timevault.cli.units import human_bytes, local_time, plural

_TYPE_CHAR = {"dir": "d", "symlink": "l", "file": "-"}
_TYPE_MODE = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "file": stat.S_IFREG}


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def print_listing(listing: dict[str, Any]) -> None:
    """``drwxr-xr-x        -  2024-05-01 14:05:09 CEST  Documents/`` per entry, then a count."""
    entries = listing.get("entries", [])
    for entry in entries:
        mode = stat.filemode(_TYPE_MODE.get(entry["type"], 0) | int(entry.get("mode", 0)))
        size = human_bytes(entry.get("size", 0)) if entry["type"] == "file" else "-"
        name = entry["name"] + ("/" if entry["type"] == "dir" else "")
        if entry.get("target") is not None:
            name += f" -> {entry['target']}"
        print(f"{mode}  {size:>10}  {local_time(entry.get('mtime'))}  {name}")
    folders = sum(1 for e in entries if e["type"] == "dir")
    files = sum(1 for e in entries if e["type"] == "file")
    total = sum(int(e.get("size", 0)) for e in entries if e["type"] == "file")
    print(f"{listing.get('path', '/')}: {plural(folders, 'folder')}, {plural(files, 'file')}, {human_bytes(total)}")


_MARK = {"added": "+", "removed": "-", "content": "M", "metadata": "m"}


def print_diff(result: dict[str, Any]) -> None:
    """``+ /path (12 KB)``, ``- /path``, ``M /path (1.2 KB → 3.4 KB)`` sorted by path, then totals."""
    rows = [*result.get("added", []), *result.get("removed", []), *result.get("changed", [])]
    for change in sorted(rows, key=lambda c: c["path"]):
        what = change.get("what", "added")
        suffix = "/" if change["type"] == "dir" else ""
        size = ""
        if change["type"] == "file":
            if what == "content":
                size = f" ({human_bytes(change.get('old_size'))} → {human_bytes(change.get('size'))})"
            elif what != "metadata":
                size = f" ({human_bytes(change.get('size'))})"
        print(f"{_MARK.get(what, '?')} {change['path']}{suffix}{size}")
    added, removed, changed = (len(result.get(k, [])) for k in ("added", "removed", "changed"))
    print(f"{plural(added, 'path')} added ({human_bytes(result.get('added_size'))}), "
          f"{removed} removed ({human_bytes(result.get('removed_size'))}), {changed} changed")


def print_find(result: dict[str, Any]) -> None:
    """Each path, then one line per snapshot that holds it."""
    matches = result.get("matches", [])
    for match in matches:
        print(match["path"] + ("/" if match["type"] == "dir" else ""))
        for version in match.get("versions", []):
            size = f"{human_bytes(version.get('size')):>10}" if match["type"] == "file" else f"{'-':>10}"
            print(f"  {version['snapshot'][:8]}  {local_time(version.get('time'))}  {size}  "
                  f"modified {local_time(version.get('mtime'))}")
    more = " (more matched; narrow the pattern)" if result.get("truncated") else ""
    print(f"{plural(len(matches), 'path')} found{more}")
