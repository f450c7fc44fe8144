"""Browsing snapshots: ls, diff and find in the core and through `timevault repo ls|diff|find`,
on snapshots with thousands of files."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from timevault.core import browse
from timevault.core.archiver import backup
from timevault.core.repository.repo import Repository

from .conftest import PASSWORD, new_repo, run_cli

FILES = 3000


@dataclass
class History:
    repo_path: Path
    src: Path
    ids: list[str]


@pytest.fixture(scope="module")
async def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    """Two snapshots of a tree with FILES files in one folder: the second adds, removes,
    rewrites and touches some."""
    base = tmp_path_factory.mktemp("browse")
    src = base / "src"
    (src / "many").mkdir(parents=True)
    for i in range(FILES):
        (src / "many" / f"f{i:05d}.txt").write_bytes(b"x" * (i % 50))
    (src / "docs").mkdir()
    (src / "docs" / "notes.txt").write_text("first notes")
    (src / "docs" / "old.txt").write_text("old")
    (src / "docs" / "touched.txt").write_text("same")
    os.symlink("docs/notes.txt", src / "link")
    repo = await new_repo(base / "repo")
    try:
        first, _ = await backup(repo, [str(src)])
        (src / "docs" / "notes.txt").write_text("second notes, longer")
        (src / "docs" / "old.txt").unlink()
        (src / "docs" / "new" / "deep").mkdir(parents=True)
        (src / "docs" / "new" / "deep" / "notes.md").write_text("# new")
        os.utime(src / "docs" / "touched.txt", (1_000_000_000, 1_000_000_000))
        for i in range(10):
            (src / "many" / f"f{i:05d}.txt").unlink()
        second, _ = await backup(repo, [str(src)])
    finally:
        await repo.close()
    return History(base / "repo", src, [first, second])


@pytest.fixture
async def opened(history: History) -> AsyncIterator[Repository]:
    from timevault.core.storage import LocalStorage

    repo = await Repository.open(LocalStorage(history.repo_path), PASSWORD)
    yield repo
    await repo.close()


async def test_list_folders_and_files(opened: Repository, history: History) -> None:
    snapshot = await opened.load_snapshot(history.ids[0])
    root = await browse.list_folder(opened, snapshot, "/")
    assert [e.name for e in root] == [str(history.src).split("/")[1]]
    top = await browse.list_folder(opened, snapshot, str(history.src))
    assert [(e.name, e.type) for e in top] == [("docs", "dir"), ("link", "symlink"), ("many", "dir")]
    assert top[1].target == "docs/notes.txt" and top[1].path == f"{history.src}/link"
    many = await browse.list_folder(opened, snapshot, f"{history.src}/many/")
    assert len(many) == FILES and many[7].name == "f00007.txt" and many[7].size == 7
    assert many[7].mode == 0o644 and many[7].mtime.endswith("Z") and many[7].type == "file"
    one_file = await browse.list_folder(opened, snapshot, f"{history.src}/docs/notes.txt")
    assert [(e.name, e.size) for e in one_file] == [("notes.txt", len("first notes"))]
    with pytest.raises(browse.BrowseError, match="not in this snapshot"):
        await browse.list_folder(opened, snapshot, f"{history.src}/nope")
    with pytest.raises(browse.BrowseError, match="not a folder"):
        await browse.list_folder(opened, snapshot, f"{history.src}/docs/notes.txt/x")
    with pytest.raises(browse.BrowseError, match=r"'\.\.'"):
        await browse.list_folder(opened, snapshot, f"{history.src}/../etc")


async def test_listing_a_big_folder_is_fast(opened: Repository, history: History) -> None:
    snapshot = await opened.load_snapshot(history.ids[0])
    started = time.perf_counter()
    entries = await browse.list_folder(opened, snapshot, f"{history.src}/many")
    assert len(entries) == FILES
    assert time.perf_counter() - started < 1.0


async def test_diff_lists_added_removed_and_changed(opened: Repository, history: History) -> None:
    a, b = [await opened.load_snapshot(i) for i in history.ids]
    result = await browse.diff(opened, a, b)
    docs = f"{history.src}/docs"
    assert [(c.path, c.type) for c in result.added] == [
        (f"{docs}/new", "dir"), (f"{docs}/new/deep", "dir"), (f"{docs}/new/deep/notes.md", "file")]
    removed = {c.path for c in result.removed}
    assert removed == {f"{docs}/old.txt"} | {f"{history.src}/many/f{i:05d}.txt" for i in range(10)}
    changed = {c.path: (c.what, c.old_size, c.size) for c in result.changed}
    assert changed == {f"{docs}/notes.txt": ("content", 11, 20), f"{docs}/touched.txt": ("metadata", 4, 4)}
    assert result.added_size == 5 and result.removed_size == 3 + sum(i % 50 for i in range(10))
    same = await browse.diff(opened, b, b)
    assert not (same.added or same.removed or same.changed)


async def test_find_across_snapshots(opened: Repository, history: History) -> None:
    snapshots = await opened.list_snapshots()
    found, truncated = await browse.find(opened, snapshots, "NOTES")
    assert not truncated
    by_path = {f.path: f for f in found}
    assert set(by_path) == {f"{history.src}/docs/notes.txt", f"{history.src}/docs/new/deep/notes.md"}
    versions = by_path[f"{history.src}/docs/notes.txt"].versions
    assert [(v.snapshot, v.size) for v in versions] == [(history.ids[0], 11), (history.ids[1], 20)]
    assert [v.snapshot for v in by_path[f"{history.src}/docs/new/deep/notes.md"].versions] == [history.ids[1]]
    globbed, _ = await browse.find(opened, snapshots, "f0000?.txt")
    assert len(globbed) == 10 and all(len(f.versions) == 1 for f in globbed)  # gone from the second
    pathed, _ = await browse.find(opened, snapshots, "deep/*.md")
    assert [f.path for f in pathed] == [f"{history.src}/docs/new/deep/notes.md"]
    limited, truncated = await browse.find(opened, snapshots, "*.txt", limit=100)
    assert len(limited) == 100 and truncated
    with pytest.raises(browse.BrowseError):
        await browse.find(opened, snapshots, "  ")


def test_repo_ls_diff_find_commands(history: History, pw_file: Path) -> None:
    repo, src = history.repo_path, history.src
    listing = run_cli("repo", "ls", repo, history.ids[0][:8], f"{src}/many", "--json", "--password-file", pw_file)
    assert listing.code == 0, listing.stderr
    data = json.loads(listing.stdout)
    assert data["snapshot"] == history.ids[0] and data["path"] == f"{src}/many" and data["total"] == FILES
    assert set(data["entries"][0]) == {"name", "path", "type", "size", "mode", "mtime", "target"}
    text = run_cli("repo", "ls", repo, "latest", str(src), "--password-file", pw_file)
    assert text.code == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("drwx") and lines[0].endswith(" docs/")
    assert lines[1].startswith("lrwx") and lines[1].endswith("link -> docs/notes.txt")
    assert lines[-1] == f"{src}: 2 folders, 0 files, 0 bytes"

    diff = run_cli("repo", "diff", repo, history.ids[0], "latest", "--json", "--password-file", pw_file)
    assert diff.code == 0, diff.stderr
    changes = json.loads(diff.stdout)
    assert changes["from_snapshot"] == history.ids[0] and changes["to_snapshot"] == history.ids[1]
    assert len(changes["removed"]) == 11 and len(changes["added"]) == 3 and len(changes["changed"]) == 2
    diff_text = run_cli("repo", "diff", repo, history.ids[0], "latest", "--password-file", pw_file).stdout
    assert f"M {src}/docs/notes.txt (11 bytes → 20 bytes)" in diff_text
    assert f"+ {src}/docs/new/" in diff_text and f"- {src}/docs/old.txt (3 bytes)" in diff_text
    assert f"m {src}/docs/touched.txt" in diff_text
    assert diff_text.splitlines()[-1].startswith("3 paths added (5 bytes), 11 removed")

    found = run_cli("repo", "find", repo, "notes.txt", "--json", "--password-file", pw_file)
    assert found.code == 0, found.stderr
    matches = json.loads(found.stdout)["matches"]
    assert [m["path"] for m in matches] == [f"{src}/docs/notes.txt"]
    assert [v["size"] for v in matches[0]["versions"]] == [11, 20]
    found_lines = run_cli("repo", "find", repo, "notes.txt", "--password-file", pw_file).stdout.splitlines()
    assert found_lines[0] == f"{src}/docs/notes.txt" and found_lines[1].startswith(f"  {history.ids[0][:8]}  ")
    assert found_lines[-1] == "1 path found"

    missing = run_cli("repo", "ls", repo, "latest", f"{src}/nope", "--password-file", pw_file)
    assert missing.code != 0 and "is not in this snapshot" in missing.stderr and "Traceback" not in missing.stderr
