"""The inode-cache warm-up child of a backup (`archiver.warmup`): it visits what the walk
visits, in the walk's order, never outlives its backup or its parent, and a backup that cannot
start it is only slower."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from timevault.core.archiver import backup, warmup
from timevault.core.archiver.archiver import Archiver
from timevault.core.archiver.walk import Entry
from timevault.core.repository.format import Node
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
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, folder], capture_output=True, text=True, check=True
    )
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
    src = build_tree(
        tmp_path / "src", {f"d{i}/f{j}": random_bytes(100, i * 100 + j) for i in range(5) for j in range(20)}
    )
    before = set(_children(os.getpid()))
    await backup(repo, [str(src)])
    assert set(_children(os.getpid())) <= before


def test_the_child_walks_the_sources_it_is_given(tmp_path: Path) -> None:
    """Sources reach the child on its standard input (not its command line), names of any bytes."""
    odd = os.fsencode(tmp_path) + b"/caf\xe9 \n"
    os.makedirs(odd)
    warming = warmup.start([odd, os.fsencode(tmp_path / "missing")])
    assert warming is not None
    child = warming.child
    # What the child was started with (its /proc cmdline reads empty once it has exited).
    assert isinstance(child.args, list) and not any(odd in os.fsencode(arg) for arg in child.args)
    assert child.wait(timeout=10) == 0
    warming.stop()


async def test_a_backup_without_a_child_is_the_same_backup(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = build_tree(tmp_path / "src", {"a/b": random_bytes(5000, 1), "c": b"x"})
    monkeypatch.setattr(warmup.sys, "executable", str(tmp_path / "no-such-python"))
    assert warmup.start([os.fsencode(src)]) is None
    snapshot_id, _ = await backup(repo, [str(src)])
    await restore_and_compare(repo, snapshot_id, tmp_path / "out", tree_manifest(src), src)


# ---- warming contents, paced by the backup's reports --------------------------------------


def _folders_of_files(root: Path, folders: int, files: int, size: int) -> Path:
    return build_tree(
        root,
        {f"d{i}/f{j:02}": random_bytes(size, i * files + j) for i in range(folders) for j in range(files)},
    )


class _Walk:
    """`warmup.warm` in a thread with a pipe for the backup's messages, recording what it warms."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, *messages: bytes) -> None:
        self.warmed: list[str] = []
        monkeypatch.setattr(
            warmup,
            "_warm_contents",
            lambda path: self.warmed.append(os.path.relpath(os.fsdecode(path), root)),
        )
        read, self.write = os.pipe()
        self.send(*messages)
        self.pacing = warmup.Pacing(read)
        self.thread = threading.Thread(target=warmup.warm, args=(os.fsencode(root), self.pacing), daemon=True)
        self.thread.start()

    def send(self, *messages: bytes) -> None:
        for message in messages:
            os.write(self.write, message + b"\0")

    def settled(self) -> int:
        """How many files are warmed once the walk stops moving (it waits, or it is done)."""
        seen, still = -1, 0
        while still < 5:
            time.sleep(0.02)
            still = still + 1 if len(self.warmed) == seen else 0
            seen = len(self.warmed)
        return seen

    def close(self) -> None:
        os.close(self.write)
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        os.close(self.pacing.messages) if self.pacing.messages is not None else None


def test_contents_are_warmed_only_within_the_window_of_what_the_backup_has_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _folders_of_files(tmp_path / "src", folders=10, files=10, size=1000)
    monkeypatch.setattr(warmup, "WINDOW_BYTES", 25_000)
    walk = _Walk(root, monkeypatch, warmup.CONTENTS)
    # 25,000 bytes ahead of nothing read, and the file that crosses it: 26 files, in walk order.
    assert walk.settled() == 26
    assert walk.warmed == [f"d{i}/f{j:02}" for i in range(3) for j in range(10)][:26]
    assert walk.thread.is_alive()  # waiting for the backup
    walk.send(os.fsencode(root / "d0"))  # the backup has read d0: 10,000 bytes further
    assert walk.settled() == 36
    walk.close()  # the backup's end closed: no more contents, the walk finishes
    assert len(walk.warmed) == 36


def test_nothing_is_warmed_unless_the_backup_asks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folders_of_files(tmp_path / "src", folders=3, files=5, size=100)
    walk = _Walk(root, monkeypatch)
    walk.thread.join(timeout=10)
    assert walk.warmed == []
    walk.close()


def test_folders_the_backup_is_already_past_are_not_warmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report of a folder the child has not reached (the backup is ahead, or left folders
    out): the child warms nothing until it has passed that folder."""
    root = _folders_of_files(tmp_path / "src", folders=8, files=3, size=100)
    walk = _Walk(root, monkeypatch, warmup.CONTENTS, os.fsencode(root / "d5"))
    walk.thread.join(timeout=10)
    assert walk.warmed == [f"d{i}/f{j:02}" for i in (6, 7) for j in range(3)]
    walk.close()


def test_the_walk_order_of_paths_and_sources() -> None:
    assert warmup.order(b"/a/b") < warmup.order(b"/a-b")  # a folder's subfolders before its later siblings
    assert warmup.in_walk_order([b"/c", b"/a-b", b"/a/b", b"/a", b"/ab"]) == [b"/a", b"/a-b", b"/ab", b"/c"]


def test_the_sources_are_read_up_to_an_empty_one(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.write(write, b"/caf\xe9\n\0/b\0\0+\0/b/x")
    os.close(write)
    assert warmup.read_sources(read) == ([b"/caf\xe9\n", b"/b"], b"+\0/b/x")
    os.close(read)


async def test_a_first_backup_asks_for_contents_and_reports_its_folders(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = build_tree(tmp_path / "src", {"a/x": b"1", "a/b/y": b"2", "c/z": b"3", "top": b"4"})
    runs: list[tuple[bool, list[str]]] = []
    real_start = warmup.start

    def recording_start(sources: list[bytes]) -> warmup.Warming | None:
        warming = real_start(sources)
        assert warming is not None
        reports: list[str] = []
        runs.append((False, reports))
        real_scanned, real_contents = warming.scanned, warming.warm_contents

        def scanned(folder: bytes) -> None:
            reports.append(os.path.relpath(os.fsdecode(folder), src))
            real_scanned(folder)

        def warm_contents() -> None:
            runs[-1] = (True, reports)
            real_contents()

        warming.scanned, warming.warm_contents = scanned, warm_contents  # type: ignore[method-assign]
        return warming

    monkeypatch.setattr(warmup, "start", recording_start)
    await backup(repo, [str(src)])
    await backup(repo, [str(src)])  # has a parent: files unchanged are not read
    assert runs[0] == (True, [".", "a", "a/b", "c"])
    assert runs[1][0] is False


async def test_folders_are_scanned_ahead_of_the_walk_once_each(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scans run ahead in the walk's order, past a folder's own subfolders to its later
    siblings: most folders hold only files, and each would otherwise wait for its own scan."""
    files = {f"p{i}/d{j}/f": random_bytes(50, i * 10 + j) for i in range(2) for j in range(5)}
    src = build_tree(tmp_path / "src", files)
    scanned: list[str] = []
    taken: list[tuple[str, bool]] = []  # (folder, whether its scan was started ahead)
    real_scan, real_take = Archiver._scan, Archiver._take_scan

    def relative(path: bytes) -> str:
        return os.path.relpath(os.fsdecode(path), src)

    async def scan(self: Archiver, path: bytes) -> tuple[list[Entry | Node], list[str]]:
        scanned.append(relative(path))
        return await real_scan(self, path)

    def take(self: Archiver, path: bytes) -> asyncio.Task[tuple[list[Entry | Node], list[str]]]:
        taken.append((relative(path), path in self._scans))
        return real_take(self, path)

    monkeypatch.setattr(Archiver, "_scan", scan)
    monkeypatch.setattr(Archiver, "_take_scan", take)
    snapshot_id, _ = await backup(repo, [str(src)])
    folders = [".", "p0", "p1", *sorted({os.path.dirname(name) for name in files})]
    assert sorted(scanned) == sorted(folders)
    assert [folder for folder, _ in taken] == [
        ".",
        "p0",
        *(f"p0/d{j}" for j in range(5)),
        "p1",
        *(f"p1/d{j}" for j in range(5)),
    ]
    # Every folder but the source itself was being scanned before the walk got to it.
    assert all(ahead for _, ahead in taken[1:])
    await restore_and_compare(repo, snapshot_id, tmp_path / "out", tree_manifest(src), src)


def test_a_child_gone_is_not_written_to_and_never_fails_the_backup(tmp_path: Path) -> None:
    warming = warmup.start([os.fsencode(tmp_path)])
    assert warming is not None
    assert warming.child.wait(timeout=10) == 0  # its walk is done: it reads no more messages
    warming.warm_contents()  # the pipe has no reader: dropped, and no more writes
    assert warming.contents is False
    warming.scanned(os.fsencode(tmp_path))
    warming.stop()
    warming.stop()  # twice is fine
