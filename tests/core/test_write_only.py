"""The write-only tier: back up and list without the password, never read back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from timevault.core.archiver import backup
from timevault.core.checker import check
from timevault.core.errors import DamagedData
from timevault.core.prune import prune
from timevault.core.repository.repo import ReadAccessRequired, Repository, RepositoryError
from timevault.core.restorer import restore
from timevault.core.storage import LocalStorage

from .conftest import (
    assert_manifests_equal,
    build_tree,
    new_repo,
    random_bytes,
    reopen,
    restored_path,
    set_mtime,
    tree_manifest,
)


async def _write_only(repo: Repository) -> Repository:
    return await Repository.open_write_only(LocalStorage(repo.storage.location), repo.export_write_keys())


async def test_write_only_backup_and_password_restore(repo: Repository, tmp_path: Path) -> None:
    exported = repo.export_write_keys()
    assert repo._private_key is not None and repo._private_key not in exported
    wo = await _write_only(repo)
    assert not wo.can_read

    source = build_tree(
        tmp_path / "src",
        {
            "a.bin": random_bytes(300_000, 1),
            "d/b.txt": "bee",
            "d/c.bin": random_bytes(5 * 1024 * 1024, 2),
            "e/": None,
        },
        symlinks={"link": "a.bin"},
    )
    for path in source.rglob("*"):
        set_mtime(path, 1_500_000_000_000_000_000)
    cache = tmp_path / "cache"
    first_id, first = await backup(wo, [str(source)], cache_dir=str(cache))
    assert first.stats.files == 3 and first.stats.unchanged_files == 0
    manifests = {first_id: tree_manifest(source)}

    # Second run: the files cache says nothing changed, so nothing is read.
    second_id, second = await backup(wo, [str(source)], cache_dir=str(cache))
    assert second.stats.unchanged_files == 3
    assert second.stats.added_size < 16 * 1024
    assert second.parent == first_id
    manifests[second_id] = tree_manifest(source)

    # An edit is still seen through the cache.
    (source / "d" / "b.txt").write_text("changed")
    set_mtime(source / "d" / "b.txt", 1_600_000_000_000_000_000)
    third_id, third = await backup(wo, [str(source)], cache_dir=str(cache))
    assert third.stats.unchanged_files == 2
    manifests[third_id] = tree_manifest(source)

    # Without the cache the write tier cannot read the parent's trees: everything is read again,
    # but dedup against the index still stores nothing new.
    _, uncached = await backup(wo, [str(source)])
    assert uncached.stats.unchanged_files == 0
    assert uncached.stats.added_size < 16 * 1024

    listed = [s for s, _ in await wo.list_snapshots()]
    assert listed[:3] == [first_id, second_id, third_id] and len(listed) == 4
    assert await wo.resolve_snapshot("latest") == listed[-1]

    with pytest.raises(ReadAccessRequired):
        await wo.load_tree(first.tree)
    with pytest.raises(ReadAccessRequired):
        await restore(wo, first_id, str(tmp_path / "nope"))
    assert not (tmp_path / "nope").exists()
    # Prune needs no password: what each snapshot references is readable with the write keys.
    assert (await prune(wo)).marked
    with pytest.raises(ReadAccessRequired):
        await wo.change_password("new password")
    checked = await check(wo)
    assert checked.errors == [] and any("password" in n for n in checked.notes)

    full = await reopen(repo)
    assert (await check(full, read_data=True)).errors == []
    for snapshot_id, manifest in manifests.items():
        target = tmp_path / f"out-{snapshot_id[:6]}"
        assert (await restore(full, snapshot_id, str(target))).errors == []
        assert_manifests_equal(tree_manifest(restored_path(target, source)), manifest)


async def test_cache_entries_carry_over_and_follow_metadata_changes(repo: Repository, tmp_path: Path) -> None:
    """An unchanged file's entry goes into the next cache as it was read, run after run; a
    file whose mode alone changed gets a new entry (its blobs reused), and restores with it."""
    wo = await _write_only(repo)
    source = build_tree(tmp_path / "src", {"a": random_bytes(100, 1), "d/b": random_bytes(100, 2)})
    cache = tmp_path / "cache"
    await backup(wo, [str(source)], cache_dir=str(cache))
    for _ in range(2):
        _, again = await backup(wo, [str(source)], cache_dir=str(cache))
        assert again.stats.unchanged_files == 2 and again.stats.added_size < 16 * 1024
    os.chmod(source / "a", 0o600)
    _, chmodded = await backup(wo, [str(source)], cache_dir=str(cache))
    assert chmodded.stats.unchanged_files == 2  # the content is reused, the node is new
    last_id, last = await backup(wo, [str(source)], cache_dir=str(cache))
    assert last.stats.unchanged_files == 2
    target = tmp_path / "out"
    assert (await restore(await reopen(repo), last_id, str(target))).errors == []
    restored = restored_path(target, source)
    assert os.stat(restored / "a").st_mode & 0o777 == 0o600
    assert_manifests_equal(tree_manifest(restored), tree_manifest(source))


async def test_damaged_files_cache_only_costs_rereading(repo: Repository, tmp_path: Path) -> None:
    wo = await _write_only(repo)
    source = build_tree(tmp_path / "src", {"a": "x", "b": "y"})
    cache = tmp_path / "cache"
    await backup(wo, [str(source)], cache_dir=str(cache))
    (cache_file,) = cache.glob("*.files")
    cache_file.write_bytes(b"garbage")
    snapshot_id, snapshot = await backup(wo, [str(source)], cache_dir=str(cache))
    assert snapshot.stats.unchanged_files == 0 and snapshot.stats.files == 2
    target = tmp_path / "out"
    assert (await restore(await reopen(repo), snapshot_id, str(target))).errors == []
    assert (restored_path(target, source) / "b").read_text() == "y"


async def test_files_cache_of_another_snapshot_is_not_trusted(repo: Repository, tmp_path: Path) -> None:
    """A cache written for an older snapshot must not be used against a newer parent."""
    wo = await _write_only(repo)
    source = build_tree(tmp_path / "src", {"a": "one"})
    cache = tmp_path / "cache"
    await backup(wo, [str(source)], cache_dir=str(cache))
    stale = next(cache.iterdir()).read_bytes()
    await backup(wo, [str(source)])  # a newer snapshot written without the cache
    next(cache.iterdir()).write_bytes(stale)
    _, snapshot = await backup(wo, [str(source)], cache_dir=str(cache))
    assert snapshot.stats.unchanged_files == 0


async def test_write_keys_of_another_repository_are_refused(repo: Repository, tmp_path: Path) -> None:
    other = await new_repo(tmp_path / "other")
    with pytest.raises(RepositoryError, match="another repository"):
        await Repository.open_write_only(LocalStorage(repo.storage.location), other.export_write_keys())
    with pytest.raises(DamagedData, match="write keys are damaged"):
        await Repository.open_write_only(LocalStorage(repo.storage.location), b"garbage")
