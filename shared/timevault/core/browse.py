"""Reading snapshots like a file system: list a folder, compare two snapshots, find a name.

Built only on the repository's public read API (`Repository.load_tree`, snapshots' root tree
ids), so it needs the read tier (the password). Paths are absolute, as the snapshot's root tree
mirrors the backed-up paths (``/home/me/Documents/notes.txt``); names are decoded with
`os.fsdecode`, so names that are not UTF-8 survive a round trip through these functions.

Trees are content-addressed: two folders with the same tree id are the same, so a diff never
opens a subtree that did not change and `find` reads each distinct folder once across all
snapshots.
"""

from __future__ import annotations

import bisect
import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from timevault.core.errors import BrowseError
from timevault.core.repository.format import Node, Snapshot, Tree

FIND_LIMIT = 1000

__all__ = ["BrowseError", "Change", "Diff", "Entry", "Found", "Version", "diff", "find", "find_node", "list_folder"]


class TreeSource(Protocol):
    """What browsing needs of a repository (a `Repository`, or a cache in front of one)."""

    async def load_tree(self, tree_id: bytes) -> Tree: ...


@dataclass(frozen=True)
class Entry:
    """One entry of a snapshot folder."""

    name: str
    path: str
    type: str  # file | dir | symlink
    size: int
    mode: int
    mtime: str  # RFC 3339, UTC
    target: str | None = None


@dataclass
class Change:
    """One path that differs between two snapshots."""

    path: str
    type: str
    size: int  # after (added, changed) or before (removed)
    old_size: int = 0
    what: Literal["added", "removed", "content", "metadata"] = "added"


@dataclass
class Diff:
    added: list[Change] = field(default_factory=list)
    removed: list[Change] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)

    @property
    def added_size(self) -> int:
        return sum(c.size for c in self.added if c.type == "file")

    @property
    def removed_size(self) -> int:
        return sum(c.size for c in self.removed if c.type == "file")


@dataclass
class Version:
    snapshot: str
    time: str
    size: int
    mtime: str


@dataclass
class Found:
    """A path whose name matched, and every snapshot that holds it."""

    path: str
    type: str
    versions: list[Version] = field(default_factory=list)


def mtime_text(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def entry_of(node: Node, path: str) -> Entry:
    name = os.fsdecode(node.name)
    return Entry(
        name=name,
        path=path,
        type=node.type,
        size=node.size if node.type == "file" else 0,
        mode=node.mode,
        mtime=mtime_text(node.mtime_ns),
        target=os.fsdecode(node.target) if node.target is not None else None,
    )


def split_path(path: str) -> list[bytes]:
    """An absolute snapshot path as name parts; '..' is refused, '.' and empty parts dropped."""
    parts = [os.fsencode(part) for part in path.split("/") if part not in ("", ".")]
    if b".." in parts:
        raise BrowseError(f"'..' is not allowed in a snapshot path: {path!r}")
    return parts


def join_path(parts: Sequence[bytes]) -> str:
    return "/" + "/".join(os.fsdecode(part) for part in parts)


def _lookup(tree: Tree, name: bytes) -> Node | None:
    """The node called `name` (a tree's nodes are sorted by name)."""
    nodes = tree.nodes
    i = bisect.bisect_left(nodes, name, key=lambda node: node.name)
    if i < len(nodes) and nodes[i].name == name:
        return nodes[i]
    return next((node for node in nodes if node.name == name), None)  # an unsorted (foreign) tree


async def find_node(repo: TreeSource, root: bytes, path: str) -> Node | None:
    """The node at `path` (None for the root folder itself); BrowseError when there is none."""
    parts = split_path(path)
    tree_id = root
    node: Node | None = None
    for depth, part in enumerate(parts):
        tree = await repo.load_tree(tree_id)
        node = _lookup(tree, part)
        if node is None:
            raise BrowseError(f"{join_path(parts[: depth + 1])} is not in this snapshot")
        if depth < len(parts) - 1:
            if node.type != "dir" or node.subtree is None:
                raise BrowseError(f"{join_path(parts[: depth + 1])} is not a folder")
            tree_id = node.subtree
    return node


async def list_folder(repo: TreeSource, snapshot: Snapshot, path: str = "/") -> list[Entry]:
    """The entries of the folder `path` of `snapshot`, by name (a file's path lists the file)."""
    parts = split_path(path)
    node = await find_node(repo, snapshot.tree, path)
    base = join_path(parts).rstrip("/")
    if node is None:
        tree_id = snapshot.tree
    elif node.type == "dir" and node.subtree is not None:
        tree_id = node.subtree
    else:
        return [entry_of(node, join_path(parts))]
    tree = await repo.load_tree(tree_id)
    return [entry_of(child, f"{base}/{os.fsdecode(child.name)}") for child in tree.nodes]


# --- diff ------------------------------------------------------------------------------------


async def diff(repo: TreeSource, before: Snapshot, after: Snapshot) -> Diff:
    """What changed from `before` to `after`: added, removed and changed paths, with sizes.

    A folder that appeared or went is listed with everything in it. A file whose content
    (or a symlink whose target) differs is changed with ``what="content"``; one whose mode or
    modification time alone differs, with ``what="metadata"``.
    """
    result = Diff()
    await _diff_trees(repo, before.tree, after.tree, "", result)
    return result


async def _diff_trees(repo: TreeSource, a_id: bytes, b_id: bytes, prefix: str, out: Diff) -> None:
    if a_id == b_id:
        return
    a, b = await repo.load_tree(a_id), await repo.load_tree(b_id)
    a_nodes = {node.name: node for node in a.nodes}
    b_nodes = {node.name: node for node in b.nodes}
    for name in sorted(a_nodes.keys() | b_nodes.keys()):
        old, new = a_nodes.get(name), b_nodes.get(name)
        path = f"{prefix}/{os.fsdecode(name)}"
        if old is None and new is not None:
            await _all_of(repo, new, path, "added", out.added)
        elif new is None and old is not None:
            await _all_of(repo, old, path, "removed", out.removed)
        elif old is not None and new is not None:
            if old.type != new.type:
                await _all_of(repo, old, path, "removed", out.removed)
                await _all_of(repo, new, path, "added", out.added)
            elif new.type == "dir":
                if old.subtree is not None and new.subtree is not None:
                    await _diff_trees(repo, old.subtree, new.subtree, path, out)
            elif old.content != new.content or old.size != new.size or old.target != new.target:
                out.changed.append(Change(path, new.type, _size(new), _size(old), "content"))
            elif old.mode != new.mode or old.mtime_ns != new.mtime_ns:
                out.changed.append(Change(path, new.type, _size(new), _size(old), "metadata"))


def _size(node: Node) -> int:
    return node.size if node.type == "file" else 0


async def _all_of(repo: TreeSource, node: Node, path: str, what: Literal["added", "removed"],
                  out: list[Change]) -> None:
    out.append(Change(path, node.type, _size(node), 0, what))
    if node.type == "dir" and node.subtree is not None:
        tree = await repo.load_tree(node.subtree)
        for child in tree.nodes:
            await _all_of(repo, child, f"{path}/{os.fsdecode(child.name)}", what, out)


# --- find ------------------------------------------------------------------------------------


def name_matcher(pattern: str) -> tuple[str, str | None]:
    """(pattern for names, pattern for whole paths or None), both lower case.

    A pattern without wildcards (``*?[``) matches names that contain it; with them it is a
    shell glob on the name. A pattern with a '/' also has to match the whole path (its last
    part is the name pattern): ``Documents/*.pdf``, ``/home/*/notes.txt``.
    """
    text = pattern.strip().lower()
    if not text or text in ("/", "*"):
        raise BrowseError("give a name or a pattern to find, e.g. notes.txt or *.pdf")
    path_pattern = None
    if "/" in text.strip("/"):
        path_pattern = text if text.startswith("/") else "*/" + text
        text = text.rstrip("/").rsplit("/", 1)[1]
    text = text.strip("/")
    if not any(c in text for c in "*?["):
        text = f"*{text}*"
    return text, path_pattern


async def find(
    repo: TreeSource,
    snapshots: Sequence[tuple[str, Snapshot]],
    pattern: str,
    *,
    limit: int = FIND_LIMIT,
) -> tuple[list[Found], bool]:
    """Paths whose name matches `pattern`, each with the snapshots that hold it (oldest first).

    Returns (matches by path, truncated): at most `limit` distinct paths are reported.
    """
    name_pattern, path_pattern = name_matcher(pattern)
    memo: dict[bytes, list[tuple[str, Node]]] = {}

    async def matches_in(tree_id: bytes) -> list[tuple[str, Node]]:
        found = memo.get(tree_id)
        if found is not None:
            return found
        tree = await repo.load_tree(tree_id)
        found = []
        for node in tree.nodes:
            name = os.fsdecode(node.name)
            if fnmatch.fnmatchcase(name.lower(), name_pattern):
                found.append((name, node))
            if node.type == "dir" and node.subtree is not None:
                found.extend((f"{name}/{rel}", child) for rel, child in await matches_in(node.subtree))
        memo[tree_id] = found
        return found

    by_path: dict[str, Found] = {}
    truncated = False
    for snapshot_id, snapshot in snapshots:
        for rel, node in await matches_in(snapshot.tree):
            path = "/" + rel
            if path_pattern is not None and not fnmatch.fnmatchcase(path.lower(), path_pattern):
                continue
            found = by_path.get(path)
            if found is None:
                if len(by_path) >= limit:
                    truncated = True
                    continue
                found = by_path[path] = Found(path, node.type)
            found.versions.append(Version(snapshot_id, snapshot.time, _size(node), mtime_text(node.mtime_ns)))
    return sorted(by_path.values(), key=lambda f: f.path), truncated
