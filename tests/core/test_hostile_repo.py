"""A crafted (hostile or buggy) repository must never make restore write outside its target."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from timevault.core.repository.format import Node
from timevault.core.repository.repo import Repository
from timevault.core.restorer import RestoreError, restore

from .conftest import SnapshotWriter, reopen


def _all_entries(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A folder outside every restore target; it must stay empty."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


UNSAFE_NAMES = [b"..", b".", b"", b"a/b", b"/etc", b"../../outside/pwned", b"nul\0byte"]


@pytest.mark.parametrize("name", UNSAFE_NAMES, ids=repr)
async def test_unsafe_file_names_are_refused(
    repo: Repository, tmp_path: Path, sentinel: Path, name: bytes
) -> None:
    w = SnapshotWriter(repo)
    snapshot_id = await w.commit(
        [await w.dir(b"d", [await w.file(b"innocent", b"ok"), await w.file(name, b"pwned")])]
    )
    target = tmp_path / "target"
    with pytest.raises(RestoreError):
        await restore(await reopen(repo), snapshot_id, str(target))
    assert _all_entries(sentinel) == []
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if "restore-" in p.name] == []


@pytest.mark.parametrize("name", [b"..", b"a/b", b"/tmp"], ids=repr)
async def test_unsafe_folder_and_symlink_names_are_refused(
    repo: Repository, tmp_path: Path, sentinel: Path, name: bytes
) -> None:
    w = SnapshotWriter(repo)
    for nodes in (
        [await w.dir(name, [await w.file(b"f", b"pwned")])],
        [w.symlink(name, os.fsencode(sentinel))],
    ):
        snapshot_id = await w.commit(nodes)
        with pytest.raises(RestoreError):
            await restore(repo, snapshot_id, str(tmp_path / "target"))
    assert _all_entries(sentinel) == []
    assert not (tmp_path / "target").exists()


async def test_duplicate_name_symlink_then_folder(repo: Repository, tmp_path: Path, sentinel: Path) -> None:
    """Symlink 'x' → outside, then folder 'x' with a file inside: the file would land outside."""
    w = SnapshotWriter(repo)
    nodes = [w.symlink(b"x", os.fsencode(sentinel)), await w.dir(b"x", [await w.file(b"pwned", b"gotcha")])]
    snapshot_id = await w.commit(nodes)
    with pytest.raises(RestoreError, match="repeated"):
        await restore(repo, snapshot_id, str(tmp_path / "target"))
    assert _all_entries(sentinel) == []


@pytest.mark.parametrize("second", ["file", "symlink", "dir"])
async def test_duplicate_names_of_any_kind(
    repo: Repository, tmp_path: Path, sentinel: Path, second: str
) -> None:
    w = SnapshotWriter(repo)
    other = {
        "file": await w.file(b"x", b"second"),
        "symlink": w.symlink(b"x", os.fsencode(sentinel / "pwned")),
        "dir": await w.dir(b"x", []),
    }[second]
    snapshot_id = await w.commit([await w.file(b"x", b"first"), other])
    with pytest.raises(RestoreError):
        await restore(repo, snapshot_id, str(tmp_path / "target"))
    assert _all_entries(sentinel) == []


async def test_absolute_symlink_then_file_under_it_in_a_later_restore(
    repo: Repository, tmp_path: Path, sentinel: Path
) -> None:
    """Restore 1 leaves target/l → outside. Restore 2 (into the same folder) has a folder 'l' with a
    file: merging must not follow the symlink."""
    w = SnapshotWriter(repo)
    first = await w.commit([w.symlink(b"l", os.fsencode(sentinel))])
    second = await w.commit(
        [await w.dir(b"l", [await w.file(b"pwned", b"gotcha")]), await w.file(b"ok", b"fine")]
    )
    target = tmp_path / "target"
    assert (await restore(repo, first, str(target))).errors == []
    assert os.readlink(target / "l") == str(sentinel)
    result = await restore(repo, second, str(target))
    assert result.errors and "l" in result.errors[0]
    assert (target / "ok").read_bytes() == b"fine"
    assert os.path.islink(target / "l")
    assert _all_entries(sentinel) == []


async def test_symlink_then_file_of_same_path_via_include(
    repo: Repository, tmp_path: Path, sentinel: Path
) -> None:
    """--include through a symlink must not follow it."""
    w = SnapshotWriter(repo)
    snapshot_id = await w.commit([w.symlink(b"l", os.fsencode(sentinel)), await w.file(b"f", b"x")])
    with pytest.raises(RestoreError):
        await restore(repo, snapshot_id, str(tmp_path / "target"), includes=["l/pwned"])
    assert _all_entries(sentinel) == []


async def test_restore_into_a_target_that_is_a_symlink_to_outside(
    repo: Repository, tmp_path: Path, sentinel: Path
) -> None:
    """Files of the snapshot never replace a symlink already in the target by writing through it."""
    w = SnapshotWriter(repo)
    snapshot_id = await w.commit([await w.file(b"f", b"from snapshot")])
    target = tmp_path / "target"
    target.mkdir()
    (sentinel / "f").write_bytes(b"outside file")
    os.symlink(sentinel / "f", target / "f")
    await restore(repo, snapshot_id, str(target))
    assert (sentinel / "f").read_bytes() == b"outside file"
    assert (target / "f").read_bytes() == b"from snapshot" and not (target / "f").is_symlink()


async def test_lying_size_fails_only_that_file(repo: Repository, tmp_path: Path) -> None:
    w = SnapshotWriter(repo)
    snapshot_id = await w.commit([await w.file(b"liar", b"12345", size=10), await w.file(b"honest", b"abc")])
    target = tmp_path / "target"
    result = await restore(repo, snapshot_id, str(target))
    assert len(result.errors) == 1 and "liar" in result.errors[0]
    assert not (target / "liar").exists()
    assert (target / "honest").read_bytes() == b"abc"


async def test_unknown_node_types_are_not_created(repo: Repository, tmp_path: Path, sentinel: Path) -> None:
    w = SnapshotWriter(repo)
    weird = Node(name=b"dev", type="blockdev", mode=0o666, mtime_ns=0, target=os.fsencode(sentinel))
    snapshot_id = await w.commit([weird, await w.file(b"f", b"x")])
    target = tmp_path / "target"
    await restore(repo, snapshot_id, str(target))
    assert sorted(os.listdir(target)) == ["f"]
    assert _all_entries(sentinel) == []


async def test_crafted_snapshot_restores_when_well_formed(repo: Repository, tmp_path: Path) -> None:
    """Control: the crafting helper itself produces restorable snapshots."""
    w = SnapshotWriter(repo)
    snapshot_id = await w.commit(
        [
            await w.dir(b"d", [await w.file(b"f", b"data", mode=0o640)]),
            w.symlink(b"l", b"d/f"),
            await w.file(b"\xff", b"raw"),
        ]
    )
    target = tmp_path / "target"
    assert (await restore(await reopen(repo), snapshot_id, str(target))).errors == []
    assert (target / "d" / "f").read_bytes() == b"data"
    assert (target / "d" / "f").stat().st_mode & 0o777 == 0o640
    assert (target / "l").read_bytes() == b"data"
    assert (target / os.fsdecode(b"\xff")).read_bytes() == b"raw"
