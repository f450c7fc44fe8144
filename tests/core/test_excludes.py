"""Excludes: gitignore patterns, exclude files, .timevaultignore, CACHEDIR.TAG, --one-file-system."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from timevault.core.archiver import ExcludeError, ExcludeOptions, backup
from timevault.core.archiver.excludes import CACHEDIR_SIGNATURE, Excludes
from timevault.core.archiver.walk import count_tree
from timevault.core.browse import find
from timevault.core.repository.repo import Repository

from .conftest import build_tree, run_cli


async def snapshot_paths(repo: Repository, snapshot_id: str) -> set[str]:
    """Every path in the snapshot, as absolute paths."""
    paths: set[str] = set()

    async def walk(tree_id: bytes, prefix: str) -> None:
        for node in (await repo.load_tree(tree_id)).nodes:
            path = f"{prefix}/{os.fsdecode(node.name)}"
            paths.add(path)
            if node.subtree is not None:
                await walk(node.subtree, path)

    await walk((await repo.load_snapshot(snapshot_id)).tree, "")
    return paths


def rel(paths: set[str], root: Path) -> set[str]:
    prefix = str(root) + "/"
    return {p[len(prefix):] for p in paths if p.startswith(prefix)}


async def test_patterns_files_and_ignore_files(repo: Repository, tmp_path: Path) -> None:
    src = build_tree(tmp_path / "src", {
        "keep.txt": "k", "debug.log": "x", "logs/keep.log": "k", "logs/other.log": "x",
        "build/out.o": "x", "sub/build/out.o": "x", "top.tmp": "x", "sub/deep/a.tmp": "x",
        "music/cache/big.bin": "x", "music/song.mp3": "k",
        "proj/.timevaultignore": "node_modules/\n# comment\n*.pyc\n!important.pyc\n",
        "proj/node_modules/lib.js": "x", "proj/app.py": "k", "proj/app.pyc": "x", "proj/important.pyc": "k",
        "proj/inner/.timevaultignore": "secret.txt\n", "proj/inner/secret.txt": "x", "proj/inner/b.pyc": "x",
        "proj/inner/ok.txt": "k", "other/secret.txt": "k",
    })
    exclude_file = tmp_path / "excludes.txt"
    exclude_file.write_text("# from a file\n*.tmp\n\n/build/\n")
    options = ExcludeOptions(patterns=["*.log", "!keep.log", "sub/build", f"{src}/music/cache"],
                             files=[str(exclude_file)])
    snapshot_id, snapshot = await backup(repo, [str(src)], excludes=options)
    paths = rel(await snapshot_paths(repo, snapshot_id), src)
    kept = {"keep.txt", "logs", "logs/keep.log", "build", "sub", "sub/deep", "music", "music/song.mp3", "proj",
            "proj/.timevaultignore", "proj/app.py", "proj/important.pyc", "proj/inner",
            "proj/inner/.timevaultignore", "proj/inner/ok.txt", "other", "other/secret.txt"}
    # "/build/" is anchored at the source: the top build/ goes, sub/build is excluded by its own pattern.
    assert paths == kept - {"build"}, sorted(paths ^ (kept - {"build"}))
    assert snapshot.stats.files == len([p for p in kept if "." in p.rsplit("/", 1)[-1] and p != "build"])


async def test_cachedir_tag_keeps_only_the_tag(repo: Repository, tmp_path: Path) -> None:
    src = build_tree(tmp_path / "src", {
        "cache/CACHEDIR.TAG": CACHEDIR_SIGNATURE + b"\n# made by a test\n", "cache/blob.bin": b"x" * 1000,
        "cache/sub/more.bin": b"y", "fake/CACHEDIR.TAG": b"Signature: not the real one", "fake/kept.bin": b"z",
    })
    snapshot_id, _ = await backup(repo, [str(src)], excludes=ExcludeOptions())
    assert rel(await snapshot_paths(repo, snapshot_id), src) == {
        "cache", "cache/CACHEDIR.TAG", "fake", "fake/CACHEDIR.TAG", "fake/kept.bin"}
    # Opting out backs the cache up as well; no options at all (the core's default) too.
    snapshot_id, _ = await backup(repo, [str(src)], excludes=ExcludeOptions(caches=False))
    assert "cache/sub/more.bin" in rel(await snapshot_paths(repo, snapshot_id), src)
    snapshot_id, _ = await backup(repo, [str(src)])
    assert "cache/blob.bin" in rel(await snapshot_paths(repo, snapshot_id), src)


async def test_progress_totals_follow_the_excludes(tmp_path: Path) -> None:
    src = build_tree(tmp_path / "src", {"a.txt": b"a" * 10, "b.log": b"b" * 100, "d/c.log": b"c" * 1000,
                                        "d/.timevaultignore": b"*.txt\n", "d/e.txt": b"e" * 5})
    rules = Excludes(ExcludeOptions(patterns=["*.log"]), [os.fsencode(src)])
    assert count_tree([os.fsencode(src)], rules) == (2, 10 + len(b"*.txt\n"))
    assert count_tree([os.fsencode(src)]) == (5, 10 + 100 + 1000 + 6 + 5)


def test_bad_patterns_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ExcludeError, match=r"cannot read exclude file .*nope"):
        Excludes(ExcludeOptions(files=[str(tmp_path / "nope")]), [b"/x"])
    with pytest.raises(ExcludeError, match="NUL"):
        Excludes(ExcludeOptions(patterns=["a\0b"]), [b"/x"])


async def test_bad_ignore_file_is_a_warning_not_a_failure(repo: Repository, tmp_path: Path) -> None:
    src = build_tree(tmp_path / "src", {"d/.timevaultignore": b"x" * (2 * 1024 * 1024), "d/a.txt": "a"})
    snapshot_id, snapshot = await backup(repo, [str(src)], excludes=ExcludeOptions())
    warnings = repo.snapshot_warnings(snapshot)
    assert any(".timevaultignore" in w and "larger than" in w for w in warnings), warnings
    assert "d/a.txt" in rel(await snapshot_paths(repo, snapshot_id), src)


async def test_one_file_system_leaves_out_other_mounts(repo: Repository, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    src = build_tree(tmp_path / "src", {"here.txt": "h", "mnt/": None})
    mount = src / "mnt"
    await asyncio.to_thread(subprocess.run, ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        (mount / "there.txt").write_text("t")
        snapshot_id, _ = await backup(repo, [str(src)], excludes=ExcludeOptions(one_file_system=True))
        assert rel(await snapshot_paths(repo, snapshot_id), src) == {"here.txt"}
        snapshot_id, _ = await backup(repo, [str(src)], excludes=ExcludeOptions())
        assert rel(await snapshot_paths(repo, snapshot_id), src) == {"here.txt", "mnt", "mnt/there.txt"}
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", str(mount)], check=True)


async def test_excluded_names_are_never_found(repo: Repository, tmp_path: Path) -> None:
    src = build_tree(tmp_path / "src", {"a/secret.key": "s", "a/notes.txt": "n"})
    snapshot_id, snapshot = await backup(repo, [str(src)], excludes=ExcludeOptions(patterns=["*.key"]))
    matches, _ = await find(repo, [(snapshot_id, snapshot)], "secret")
    assert matches == []


def test_repo_backup_flags(tmp_path: Path, pw_file: Path) -> None:
    src = build_tree(tmp_path / "src", {"a.txt": "a", "b.tmp": "b", "c/d.bak": "d", "e.txt": "e"})
    excludes = tmp_path / "ex"
    excludes.write_text("*.bak\n")
    repo = tmp_path / "repo"
    assert run_cli("repo", "init", repo, "--password-file", pw_file).code == 0
    result = run_cli("repo", "backup", repo, src, "--exclude", "*.tmp", "--exclude", "e.txt",
                     "--exclude-file", excludes, "--password-file", pw_file, "--json")
    assert result.code == 0, result.stderr
    listing = run_cli("repo", "ls", repo, "latest", f"{src}/c", "--json", "--password-file", pw_file)
    assert listing.code == 0, listing.stderr
    assert json.loads(listing.stdout)["entries"] == []
    top = json.loads(run_cli("repo", "ls", repo, "latest", str(src), "--json", "--password-file", pw_file).stdout)
    assert [e["name"] for e in top["entries"]] == ["a.txt", "c"]
    missing = run_cli("repo", "backup", repo, src, "--exclude-file", tmp_path / "missing", "--password-file", pw_file)
    assert missing.code == 2 and "cannot read exclude file" in missing.stderr and "Traceback" not in missing.stderr
