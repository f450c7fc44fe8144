"""The inode-cache warm-up child of a backup (`archiver.warmup`): it visits what the walk
visits, in the walk's order, never outlives its backup or its parent, and a backup that cannot
start it is only slower."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from timevault.core.archiver import backup, warmup
from timevault.core.repository.repo import Repository

from .conftest import build_tree, random_bytes, restore_and_compare, tree_manifest


def test_warm_stats_entries_in_the_walks_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = build_tree(tmp_path / "src", {"b/y": b"1", "b/x/deep": b"2", "a": b"3", "c/z": b"4"})
    os.symlink("b", root / "link")  # not followed
    stated: list[str] = []
    real_stat = os.DirEntry.stat

    class Recorder:
        def __init__(self, entry: os.DirEntry[bytes]) -> None:
            self.entry = entry
            self.name, self.path = entry.name, entry.path

        def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
            assert not follow_symlinks
            stated.append(os.path.relpath(os.fsdecode(self.entry.path), root))
            return real_stat(self.entry, follow_symlinks=False)

    real_scandir = os.scandir

    class Listing:
        def __init__(self, path: bytes) -> None:
            self.it = real_scandir(path)

        def __enter__(self) -> list[Recorder]:
            return [Recorder(entry) for entry in self.it]

        def __exit__(self, *exc: object) -> None:
            self.it.close()

    monkeypatch.setattr(warmup.os, "scandir", Listing)
    warmup.warm(os.fsencode(root))
    # A folder's entries by name, then each subfolder depth first: the archiver's order.
    assert stated == ["a", "b", "c", "link", "b/x", "b/y", "b/x/deep", "c/z"]


def test_warm_goes_on_past_what_it_cannot_read(tmp_path: Path) -> None:
    root = build_tree(tmp_path / "src", {"open/f": b"1", "shut/g": b"2"})
    os.chmod(root / "shut", 0)
    try:
        warmup.warm(os.fsencode(root))
        warmup.warm(os.fsencode(tmp_path / "missing"))
        warmup.warm(os.fsencode(root / "open" / "f"))  # a file as a source
    finally:
        os.chmod(root / "shut", 0o755)


def test_the_child_asks_to_die_with_its_parent() -> None:
    """A backup killed with -9 must not leave its child walking: the child sets its parent-death
    signal (read back here with PR_GET_PDEATHSIG) and stops at once when its parent is gone."""
    code = (
        "import ctypes, os, sys; sys.path.insert(0, sys.argv[1]); import warmup;"
        "warmup._die_with_parent(os.getppid());"
        "sig = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0); print(sig.value)"
    )
    folder = os.path.dirname(warmup.__file__)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, folder], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "9"
    orphan = subprocess.run(
        [sys.executable, "-I", "-S", warmup.__file__, "1"], input=b"/", capture_output=True, timeout=10
    )
    assert orphan.returncode == 0  # its parent is not pid 1: it returned without walking "/"


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


async def test_a_backup_leaves_no_child_behind(repo: Repository, tmp_path: Path) -> None:
    src = build_tree(tmp_path / "src", {f"d{i}/f{j}": random_bytes(100, i * 100 + j) for i in range(5) for j in range(20)})
    before = set(_children(os.getpid()))
    await backup(repo, [str(src)])
    assert set(_children(os.getpid())) <= before


def test_the_child_walks_the_sources_it_is_given(tmp_path: Path) -> None:
    """Sources reach the child on its standard input (not its command line), names of any bytes."""
    odd = os.fsencode(tmp_path) + b"/caf\xe9 \n"
    os.makedirs(odd)
    child = warmup.start([odd, os.fsencode(tmp_path / "missing")])
    assert child is not None
    # What the child was started with (its /proc cmdline reads empty once it has exited).
    assert isinstance(child.args, list) and not any(odd in os.fsencode(arg) for arg in child.args)
    assert child.wait(timeout=10) == 0


async def test_a_backup_without_a_child_is_the_same_backup(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = build_tree(tmp_path / "src", {"a/b": random_bytes(5000, 1), "c": b"x"})
    monkeypatch.setattr(warmup.sys, "executable", str(tmp_path / "no-such-python"))
    assert warmup.start([os.fsencode(src)]) is None
    snapshot_id, _ = await backup(repo, [str(src)])
    await restore_and_compare(repo, snapshot_id, tmp_path / "out", tree_manifest(src), src)
