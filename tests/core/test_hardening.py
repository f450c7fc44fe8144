"""Restores that hand out no privileges and follow no planted symlinks; backups that read only the
regular files they listed; a planner that a hostile snapshot cannot make explode."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from timevault.core.archiver import backup
from timevault.core.archiver.walk import Entry, LargeFileReader, kind_of, read_file
from timevault.core.chunker import ChunkerParams
from timevault.core.repository.repo import Repository
from timevault.core.restore_target import TargetError, check_under_roots, default_roots
from timevault.core.restorer import RestoreError, restore

from .conftest import SnapshotWriter, build_tree, random_bytes, reopen, restored_path

SETID = stat.S_ISUID | stat.S_ISGID
NOBODY = 65534


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    return path


def _entries(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# --- set-id bits --------------------------------------------------------------------------------


async def test_setuid_and_setgid_are_dropped_unless_asked_for(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"tool": "#!/bin/sh\n", "group-tool": "#!/bin/sh\n", "plain": "x"})
    os.chmod(source / "tool", 0o4755)
    os.chmod(source / "group-tool", 0o2755)
    snapshot_id, _ = await backup(repo, [str(source)])
    out = tmp_path / "out"
    assert (await restore(repo, snapshot_id, str(out))).errors == []
    restored = restored_path(out, source)
    assert stat.S_IMODE((restored / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((restored / "group-tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((restored / "plain").stat().st_mode) == stat.S_IMODE((source / "plain").stat().st_mode)
    kept = tmp_path / "kept"
    assert (await restore(repo, snapshot_id, str(kept), keep_setid=True)).errors == []
    assert stat.S_IMODE((restored_path(kept, source) / "tool").stat().st_mode) == 0o4755
    assert stat.S_IMODE((restored_path(kept, source) / "group-tool").stat().st_mode) == 0o2755


async def test_crafted_setuid_root_file_and_folder_lose_their_bits(repo: Repository, tmp_path: Path) -> None:
    writer = SnapshotWriter(repo)
    shell = await writer.file(b"sh", b"#!/bin/sh\n", mode=0o4755)
    shell.uid = shell.gid = 0
    folder = await writer.dir(b"d", [await writer.file(b"f", b"x", mode=0o6755)])
    folder.mode = 0o7777
    snapshot_id = await writer.commit([shell, folder])
    out = tmp_path / "out"
    assert (await restore(await reopen(repo), snapshot_id, str(out))).errors == []
    for path in (out / "sh", out / "d", out / "d" / "f"):
        assert not path.stat().st_mode & SETID, path


# --- the way to the target ----------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a symlink to another user")
async def test_symlink_of_another_user_on_the_way_is_not_followed(
    repo: Repository, tmp_path: Path, sentinel: Path
) -> None:
    """A restore as root into a shared folder where another user planted `link -> /outside`."""
    source = build_tree(tmp_path / "src", {"f": "data"})
    snapshot_id, _ = await backup(repo, [str(source)])
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    os.symlink(sentinel, shared / "link")
    os.lchown(shared / "link", NOBODY, NOBODY)
    with pytest.raises(RestoreError, match="symlink"):
        await restore(repo, snapshot_id, str(shared / "link" / "restore"))
    with pytest.raises(RestoreError, match="symlink"):
        await restore(repo, snapshot_id, str(shared / "link"))
    assert _entries(sentinel) == []
    # A symlink of the user's own (or root's) is the user's choice, and is followed.
    mine = tmp_path / "mine"
    os.symlink(sentinel, mine)
    assert (await restore(repo, snapshot_id, str(mine / "restore"))).errors == []
    assert (restored_path(sentinel / "restore", source) / "f").read_text() == "data"


async def test_restore_roots_are_enforced(repo: Repository, tmp_path: Path, sentinel: Path) -> None:
    source = build_tree(tmp_path / "src", {"f": "data"})
    snapshot_id, _ = await backup(repo, [str(source)])
    root = tmp_path / "restores"
    root.mkdir()
    roots = [str(root)]
    for target, message in [
        (tmp_path / "elsewhere", "not under a restore root"),
        (root / ".ssh", "hidden folder"),
        (root / "a" / ".config" / "b", "hidden folder"),
    ]:
        with pytest.raises(RestoreError, match=message):
            await restore(repo, snapshot_id, str(target), roots=roots)
        assert not target.exists()
    # Below a root no symlink is followed, not even the user's own.
    os.symlink(sentinel, root / "link")
    with pytest.raises(RestoreError, match="symlink"):
        await restore(repo, snapshot_id, str(root / "link" / "x"), roots=roots)
    assert _entries(sentinel) == []
    assert (await restore(repo, snapshot_id, str(root / "ok" / "deeper"), roots=roots)).errors == []
    assert (restored_path(root / "ok" / "deeper", source) / "f").read_text() == "data"
    # A root that is not there is named as such (it used to surface as a bare "[Errno 2]").
    with pytest.raises(RestoreError, match=r"the restore root .*missing-root does not exist"):
        await restore(repo, snapshot_id, str(tmp_path / "missing-root" / "x"), roots=[str(tmp_path / "missing-root")])
    with pytest.raises(RestoreError, match=r"the restore root .*missing-root does not exist"):
        missing = tmp_path / "gone" / "missing-root"  # the target is the root, whose parent is gone
        await restore(repo, snapshot_id, str(missing), roots=[str(missing)])
    assert not (tmp_path / "missing-root").exists()


def test_root_matching_and_defaults(tmp_path: Path) -> None:
    assert check_under_roots("/srv/backups/x", ["/srv", "/srv/backups"]) == "/srv/backups"
    assert check_under_roots("/srv", ["/srv"]) == "/srv"
    for target in ("/srvx/y", "/etc/x", "/", "/home/../etc"):
        with pytest.raises(TargetError):
            check_under_roots(target, ["/srv", "/home"])
    with pytest.raises(TargetError, match="hidden"):
        check_under_roots("/home/ana/.ssh", ["/home"])
    roots = default_roots(["/data/photos", "relative"], str(tmp_path))
    assert roots[:2] == ["/data/photos", str(tmp_path / "restores")]
    assert {"/mnt", "/media", "/srv", "/home"} <= set(roots) and "relative" not in roots


# --- the planner's limits -----------------------------------------------------------------------


async def test_planner_refuses_a_tree_that_explodes(repo: Repository, tmp_path: Path) -> None:
    """Each level lists the same subtree twice: 40 levels describe 2^40 entries in 40 blobs."""
    writer = SnapshotWriter(repo)
    node = await writer.file(b"f", b"x")
    nodes = [node]
    for _ in range(40):
        subtree = await writer.tree(nodes)
        nodes = [
            type(node)(name=name, type="dir", mode=0o755, mtime_ns=0, subtree=subtree) for name in (b"a", b"b")
        ]
    snapshot_id = await writer.commit(nodes)
    started = time.monotonic()
    with pytest.raises(RestoreError, match="more than"):
        await restore(await reopen(repo), snapshot_id, str(tmp_path / "out"), max_items=100_000)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


async def test_planner_refuses_folders_nested_too_deep(repo: Repository, tmp_path: Path) -> None:
    writer = SnapshotWriter(repo)
    nodes = [await writer.file(b"f", b"x")]
    for _ in range(20):
        nodes = [await writer.dir(b"d", nodes)]
    snapshot_id = await writer.commit(nodes)
    with pytest.raises(RestoreError, match="deeper than 10"):
        await restore(await reopen(repo), snapshot_id, str(tmp_path / "out"), max_depth=10)
    assert (await restore(await reopen(repo), snapshot_id, str(tmp_path / "ok"))).errors == []


# --- reads that cannot be redirected ------------------------------------------------------------


def _listed(path: Path) -> Entry:
    st = os.lstat(path)
    return Entry(path.name.encode(), os.fsencode(path), st, kind_of(st.st_mode))


def _swap(path: Path, make: str, target: Path) -> None:
    path.rename(path.with_name(path.name + ".old"))  # kept: its inode number is not reused
    if make == "fifo":
        os.mkfifo(path)
    elif make == "symlink":
        os.symlink(target, path)
    else:
        path.write_bytes(b"another file")


@pytest.mark.parametrize("make", ["fifo", "symlink", "other file"])
def test_small_file_swapped_after_listing_is_skipped(tmp_path: Path, make: str) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"root's secret")
    path = tmp_path / "f"
    path.write_bytes(b"listed")
    entry = _listed(path)
    _swap(path, make, secret)
    done = threading.Event()

    def read() -> None:
        read_file(entry, ChunkerParams(), b"k" * 32)
        done.set()

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    assert done.wait(10), "reading must not hang on a FIFO"
    assert entry.chunked is None and entry.error and "skipped" in entry.error


@pytest.mark.parametrize("make", ["fifo", "symlink"])
def test_large_file_swapped_after_listing_is_refused(tmp_path: Path, make: str) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(random_bytes(5_000_000, 1))
    path = tmp_path / "big"
    path.write_bytes(random_bytes(5_000_000, 2))
    entry = _listed(path)
    _swap(path, make, secret)
    with pytest.raises(OSError):
        LargeFileReader(entry, ChunkerParams(), b"k" * 32)


async def test_backup_of_a_file_swapped_for_a_fifo_does_not_hang(repo: Repository, tmp_path: Path) -> None:
    """The progress callback fires after the first file: the large file read next is then
    replaced by a FIFO; the backup skips it with a warning instead of hanging."""
    source = build_tree(tmp_path / "s", {"a-small.txt": "small", "b-large.bin": random_bytes(5_000_000, 4)})
    swapped = False

    def progress(_p: object) -> None:
        nonlocal swapped
        if not swapped:
            swapped = True
            _swap(source / "b-large.bin", "fifo", source)

    _, snapshot = await backup(repo, [str(source)], progress=progress)
    assert swapped and snapshot.stats.files == 1
    assert any("b-large.bin" in w for w in repo.snapshot_warnings(snapshot))
