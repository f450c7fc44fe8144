"""Backup → restore round trips of real trees, incremental backups, dedup, partial restores."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from timevault.core.archiver import backup
from timevault.core.archiver.walk import Entry, LargeFileReader, kind_of, read_file, same_file
from timevault.core.repository.format import Node
from timevault.core.repository.repo import Repository
from timevault.core.restorer import RestoreError, restore

from .conftest import (
    SMALL_CHUNKS,
    assert_manifests_equal,
    build_tree,
    make_fifo,
    make_socket,
    random_bytes,
    random_tree,
    reopen,
    restore_and_compare,
    restored_path,
    set_mtime,
    tree_manifest,
)


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


async def find_node(repo: Repository, snapshot_id: str, path: Path) -> Node:
    """The node of absolute `path` in a snapshot's tree."""
    snapshot = await repo.load_snapshot(snapshot_id)
    tree_id: bytes | None = snapshot.tree
    parts = [os.fsencode(p) for p in Path(os.path.abspath(path)).parts[1:]]
    node: Node | None = None
    for part in parts:
        assert tree_id is not None
        tree = await repo.load_tree(tree_id)
        node = next(n for n in tree.nodes if n.name == part)
        tree_id = node.subtree
    assert node is not None
    return node


@pytest.mark.parametrize("seed", range(6))
async def test_random_tree_round_trip(repo: Repository, tmp_path: Path, seed: int) -> None:
    source = random_tree(tmp_path / "src", seed)
    expected = tree_manifest(source)
    assert any(e.kind == "symlink" for e in expected.values()) or seed > 0
    snapshot_id, snapshot = await backup(repo, [str(source)])
    files = [e for e in expected.values() if e.kind == "file"]
    assert snapshot.stats.files == len(files)
    assert snapshot.stats.size == sum(len(e.content) for e in files)
    assert snapshot.warnings == 0 and repo.snapshot_warnings(snapshot) == []
    # A fresh repository object: nothing cached from the backup.
    fresh = await reopen(repo)
    await restore_and_compare(fresh, snapshot_id, tmp_path / "out", expected, source)


async def test_round_trip_all_kinds_explicitly(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(
        tmp_path / "src",
        {
            "empty": b"",
            "small.txt": "hello\n",
            "nested/deeper/file.bin": random_bytes(100_000, 1),
            "nested/empty-dir/": None,
            "big.bin": random_bytes(5 * 1024 * 1024 + 123, 2),  # above the small-file limit
            "ünï/日本": "non-ascii",
        },
        symlinks={
            "rel": "small.txt",
            "abs": "/etc/hostname",
            "dangling": "no/such/thing",
            "nested/up": "../small.txt",
        },
    )
    Path(os.fsdecode(os.path.join(os.fsencode(source), b"\xff\xfe-not-utf8"))).write_bytes(b"bytes name")
    os.symlink(b"\xff\xfe-not-utf8", os.path.join(os.fsencode(source), b"link-\xe9"))
    os.chmod(source / "small.txt", 0o600)
    os.chmod(source / "nested" / "deeper" / "file.bin", 0o755)
    os.chmod(source / "nested" / "empty-dir", 0o700)
    set_mtime(source / "rel", 1_000_000_000_123_456_789)
    set_mtime(source / "nested" / "empty-dir", 1_234_567_890_987_654_321)
    set_mtime(source / "nested", 1_111_111_111_000_000_001)
    expected = tree_manifest(source)
    snapshot_id, snapshot = await backup(repo, [str(source)])
    assert snapshot.stats.files == 6
    await restore_and_compare(repo, snapshot_id, tmp_path / "out", expected, source)
    out = restored_path(tmp_path / "out", source)
    assert os.readlink(out / "abs") == "/etc/hostname"
    assert not (out / "dangling").exists() and (out / "dangling").is_symlink()


async def test_several_sources_in_one_snapshot(repo: Repository, tmp_path: Path) -> None:
    a = build_tree(tmp_path / "one" / "a", {"f": "a"})
    b = build_tree(tmp_path / "two" / "b", {"g": "b", "sub/h": "c"})
    single = build_tree(tmp_path / "three", {"file.txt": "single file source"}) / "file.txt"
    snapshot_id, snapshot = await backup(repo, [str(a), str(b), str(single), str(a / "f")])
    assert snapshot.paths == sorted([str(a), str(b), str(single), str(a / "f")])
    assert snapshot.stats.files == 4
    target = tmp_path / "out"
    assert (await restore(repo, snapshot_id, str(target))).errors == []
    assert_manifests_equal(tree_manifest(restored_path(target, a)), tree_manifest(a))
    assert_manifests_equal(tree_manifest(restored_path(target, b)), tree_manifest(b))
    assert restored_path(target, single).read_text() == "single file source"
    assert not (restored_path(target, tmp_path) / "one" / "a" / "unrelated").exists()


async def test_incremental_edits_appends_renames_deletes(small_repo: Repository, tmp_path: Path) -> None:
    repo = small_repo
    source = build_tree(
        tmp_path / "src",
        {
            "big.bin": random_bytes(3_000_000, 1),
            "log.txt": random_bytes(400_000, 2),
            "move-me.bin": random_bytes(1_000_000, 3),
            "delete-me.txt": "soon gone",
            "dir/a.txt": "a",
            "dir/b.txt": "b",
            **{f"many/f{i}": f"file {i}" for i in range(20)},
        },
    )
    t = 1_600_000_000_000_000_000
    for path in source.rglob("*"):
        set_mtime(path, t)  # explicit mtimes: edits below always change them
    total_files = 26
    states: list[tuple[str, dict]] = []

    async def snap(expect_unchanged: int | None = None) -> int:
        snapshot_id, snapshot = await backup(repo, [str(source)])
        states.append((snapshot_id, tree_manifest(source)))
        if expect_unchanged is not None:
            assert snapshot.stats.unchanged_files == expect_unchanged
        return snapshot.stats.added_size

    first = await snap(expect_unchanged=0)
    assert first > 4_000_000

    # Nothing changed: nothing read, (almost) nothing added.
    assert await snap(expect_unchanged=total_files) < 16 * 1024

    # One byte in the middle of a 3 MB file: only the chunks around it are new.
    write_at(source / "big.bin", 1_500_000, b"X")
    set_mtime(source / "big.bin", t + 1)
    assert await snap(expect_unchanged=total_files - 1) < 400_000

    # Append to a log: the old chunks stay, the new tail is stored.
    append(source / "log.txt", random_bytes(50_000, 9))
    set_mtime(source / "log.txt", t + 2)
    assert await snap(expect_unchanged=total_files - 1) < 300_000

    # Rename a 1 MB file: re-read under its new name, but its chunks are already stored.
    (source / "move-me.bin").rename(source / "dir" / "moved.bin")
    assert await snap() < 32 * 1024

    # Delete files and a whole folder.
    (source / "delete-me.txt").unlink()
    shutil.rmtree(source / "many")
    added = await snap(expect_unchanged=total_files - 21)
    assert added < 16 * 1024

    fresh = await reopen(repo)
    for i, (snapshot_id, expected) in enumerate(states):
        await restore_and_compare(fresh, snapshot_id, tmp_path / f"out{i}", expected, source)
    snapshots = await fresh.list_snapshots()
    assert [s for s, _ in snapshots] == [s for s, _ in states]
    assert snapshots[1][1].parent == states[0][0]


async def test_dedup_within_and_across_snapshots(repo: Repository, tmp_path: Path) -> None:
    five_mb = random_bytes(5 * 1024 * 1024, 5)
    source = build_tree(tmp_path / "src", {"a.bin": five_mb, "copy/b.bin": five_mb, "small": five_mb[:1000]})
    snapshot_id, snapshot = await backup(repo, [str(source)])
    assert snapshot.stats.size == 2 * len(five_mb) + 1000
    assert len(five_mb) < snapshot.stats.added_size < len(five_mb) * 1.05 + 1000
    stored = (await repo.index()).stored_size()
    assert stored < len(five_mb) * 1.05 + 4000

    # Same data under another source path (no parent snapshot, every file read again).
    other = tmp_path / "other"
    shutil.copytree(source, other)
    _, again = await backup(repo, [str(other)])
    assert again.stats.unchanged_files == 0
    assert again.stats.added_size < 16 * 1024
    assert (await (await reopen(repo)).index()).stored_size() < stored + 16 * 1024

    await restore_and_compare(repo, snapshot_id, tmp_path / "out", tree_manifest(source), source)


async def test_include_restores_only_chosen_paths(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(
        tmp_path / "src",
        {"keep/a.txt": "a", "keep/sub/b.txt": "b", "skip/c.txt": "c", "top.txt": "t", "other.txt": "o"},
    )
    snapshot_id, _ = await backup(repo, [str(source)])
    rel = Path(os.path.abspath(source)).relative_to("/")
    target = tmp_path / "out"
    result = await restore(repo, snapshot_id, str(target), includes=[f"{rel}/keep", f"/{rel}/top.txt"])
    assert result.errors == [] and result.files == 3
    out = restored_path(target, source)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "keep",
        "keep/a.txt",
        "keep/sub",
        "keep/sub/b.txt",
        "top.txt",
    ]
    assert_manifests_equal(tree_manifest(out / "keep"), tree_manifest(source / "keep"))
    with pytest.raises(RestoreError):
        await restore(repo, snapshot_id, str(tmp_path / "none"), includes=[f"{rel}/no-such-file"])
    with pytest.raises(RestoreError):
        await restore(repo, snapshot_id, str(tmp_path / "none"), includes=[f"{rel}/../etc"])
    assert not (tmp_path / "none").exists()


async def test_restore_into_existing_folder(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(
        tmp_path / "src", {"a.txt": "from snapshot", "d/b.txt": "b", "clash": "file in snapshot"}
    )
    snapshot_id, _ = await backup(repo, [str(source)])
    target = tmp_path / "existing"
    out = restored_path(target, source)
    build_tree(
        out,
        {"a.txt": "old local content", "local-only.txt": "keep me", "d/local.txt": "keep", "clash/x": "dir"},
    )
    result = await restore(repo, snapshot_id, str(target))
    assert (out / "a.txt").read_text() == "from snapshot"
    assert (out / "d" / "b.txt").read_text() == "b"
    assert (out / "local-only.txt").read_text() == "keep me"
    assert (out / "d" / "local.txt").read_text() == "keep"
    # A folder where the snapshot has a file is left alone and reported.
    assert (out / "clash" / "x").read_text() == "dir"
    assert len(result.errors) == 1 and "clash" in result.errors[0]
    assert [p.name for p in target.parent.iterdir() if ".restore-" in p.name] == []
    with pytest.raises(RestoreError):
        await restore(repo, snapshot_id, str(tmp_path / "src" / "a.txt"))
    with pytest.raises(RestoreError):
        await restore(repo, snapshot_id, "relative/target")


async def test_special_files_are_skipped_with_warnings(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "s", {"normal.txt": "ok"})
    make_fifo(source / "fifo")
    sock: socket.socket = make_socket(source / "sock")
    try:
        snapshot_id, snapshot = await backup(repo, [str(source)])
    finally:
        sock.close()
    assert snapshot.stats.files == 1
    texts = repo.snapshot_warnings(snapshot)
    warnings = "\n".join(texts)
    assert "fifo" in warnings and "sock" in warnings, texts
    assert len(texts) == 2 == snapshot.warnings
    # The texts name paths: the write tier's key cannot read them.
    assert b"fifo" not in snapshot.sealed_warnings
    target = tmp_path / "out"
    assert (await restore(repo, snapshot_id, str(target))).errors == []
    assert sorted(os.listdir(restored_path(target, source))) == ["normal.txt"]


async def test_unreadable_file_is_skipped_with_a_warning(repo: Repository, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading (FIFOs are tested instead)")
    source = build_tree(tmp_path / "s", {"secret": "no", "fine": "yes"})
    (source / "secret").chmod(0)
    try:
        snapshot_id, snapshot = await backup(repo, [str(source)])
    finally:
        (source / "secret").chmod(0o600)
    assert snapshot.stats.files == 1
    assert any("secret" in w for w in repo.snapshot_warnings(snapshot))
    target = tmp_path / "out"
    await restore(repo, snapshot_id, str(target))
    assert os.listdir(restored_path(target, source)) == ["fine"]


async def test_file_changing_during_read_is_flagged(repo: Repository, tmp_path: Path) -> None:
    """The progress callback fires after the first (small) file; it grows the large file that is
    read next, so the read sees a different size than the scan did."""
    source = build_tree(tmp_path / "s", {"a-small.txt": "small", "b-large.bin": random_bytes(4_500_000, 4)})
    grown = False

    def progress(_p: object) -> None:
        nonlocal grown
        if not grown:
            grown = True
            append(source / "b-large.bin", b"appended while backing up")

    snapshot_id, snapshot = await backup(repo, [str(source)], progress=progress)
    assert grown
    node = await find_node(repo, snapshot_id, source / "b-large.bin")
    assert node.changed_while_reading
    assert not (await find_node(repo, snapshot_id, source / "a-small.txt")).changed_while_reading
    assert any("b-large.bin" in w and "changed" in w for w in repo.snapshot_warnings(snapshot))


def test_walk_helpers_detect_changes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    st = os.lstat(path)
    with open(path, "ab") as f:
        f.write(b"more")
    entry = Entry(b"f", os.fsencode(path), st, kind_of(st.st_mode))
    read_file(entry, SMALL_CHUNKS, b"k" * 32)
    assert entry.changed_while_reading and entry.chunked is not None and entry.chunked.size == 1004

    st = os.lstat(path)
    entry = Entry(b"f", os.fsencode(path), st, kind_of(st.st_mode))
    read_file(entry, SMALL_CHUNKS, b"k" * 32)
    assert not entry.changed_while_reading

    big = tmp_path / "big"
    big.write_bytes(random_bytes(300_000, 1))
    st = os.lstat(big)
    reader = LargeFileReader(Entry(b"big", os.fsencode(big), st, "file"), SMALL_CHUNKS, b"k" * 32)
    batch = reader.next_batch()
    with open(big, "r+b") as f:
        f.truncate(100)
    while reader.next_batch():
        pass
    assert batch and reader.close() is True


async def test_source_below_a_symlinked_folder(repo: Repository, tmp_path: Path) -> None:
    """Backing up <link>/sub where <link> → a real folder must back up sub, not just the link."""
    real = build_tree(tmp_path / "real", {"sub/f.txt": "content", "sub/g/h.bin": random_bytes(20_000, 3)})
    (tmp_path / "link").symlink_to(real)
    source = tmp_path / "link" / "sub"
    snapshot_id, snapshot = await backup(repo, [str(source)])
    assert snapshot.paths == [str(source)]
    assert snapshot.stats.files == 2, "the files below the symlinked folder were left out"
    target = tmp_path / "out"
    assert (await restore(repo, snapshot_id, str(target))).errors == []
    assert_manifests_equal(tree_manifest(restored_path(target, source)), tree_manifest(real / "sub"))
    # The source itself being a symlink records the symlink (it is what was named).
    _, linked = await backup(repo, [str(tmp_path / "link")])
    assert linked.stats.files == 0


async def test_large_files_read_side_by_side_keep_their_metadata(repo: Repository, tmp_path: Path) -> None:
    # Several files above the small-file limit in one folder are read concurrently; each node must
    # still carry its own size, mtime and mode (a regression once lost mtimes of such files).
    source = tmp_path / "src"
    source.mkdir()
    for i in range(3):
        path = source / f"big{i}.bin"
        path.write_bytes(random_bytes(5 * 1024 * 1024 + i, seed=40 + i))
        path.chmod(0o640 + i)
        set_mtime(path, 1_600_000_000_000_000_000 + i * 1_000_000_007)
    manifest = tree_manifest(source)
    snapshot_id, snapshot = await backup(repo, [str(source)])
    assert snapshot.stats.files == 3
    await restore_and_compare(repo, snapshot_id, tmp_path / "out", manifest, source)


async def test_metadata_only_change_is_recorded_without_reading(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "s", {"a.txt": "alpha", "b.bin": random_bytes(30_000, 8)})
    first_id, _ = await backup(repo, [str(source)])
    (source / "a.txt").chmod(0o600)
    second_id, second = await backup(repo, [str(source)])
    assert second.stats.unchanged_files == 2, "a mode change alone must not make the file be read"
    before = await find_node(repo, first_id, source / "a.txt")
    after = await find_node(repo, second_id, source / "a.txt")
    assert after.mode == 0o600 and before.mode != 0o600
    assert after.content == before.content
    await restore_and_compare(repo, second_id, tmp_path / "out", tree_manifest(source), source)


def test_file_torn_last_time_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"data")
    st = os.lstat(path)
    previous = Node(
        name=b"f", type="file", mode=0o644, mtime_ns=st.st_mtime_ns, size=st.st_size, inode=st.st_ino
    )
    assert same_file(previous, st)
    previous.changed_while_reading = True
    assert not same_file(previous, st), "content read while the file changed must not be reused"
