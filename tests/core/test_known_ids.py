"""The repository's blob ids kept between backups (`known_ids`): used only when they cannot
claim a blob that is gone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from timevault.core.archiver import backup
from timevault.core.archiver.known_ids import StoredIds
from timevault.core.checker import check
from timevault.core.prune import forget, prune
from timevault.core.repository.idruns import DiskIdSet
from timevault.core.repository.index import index_file_ids, load_stored_ids, write_index_file
from timevault.core.repository.repo import Repository
from timevault.core.restorer import restore

from .conftest import (
    assert_manifests_equal,
    build_tree,
    new_repo,
    random_bytes,
    reopen,
    restored_path,
    tree_manifest,
)


@pytest.fixture(autouse=True)
def keep_any_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """These repositories are small: keep their sets however few ids they hold."""
    monkeypatch.setattr("timevault.core.archiver.known_ids.KEEP_FROM", 0)


def kept_file(repo: Repository, cache: Path) -> Path:
    return cache / f"{repo.config.id}.ids"


async def loaded(repo: Repository, cache: Path) -> tuple[bool, bytes]:
    """(whether the kept set was used, every id it gives, sorted)."""
    stored = await StoredIds.load(repo, str(cache), None)
    with stored.ids:
        return stored.reused, b"".join(stored.ids.sorted_blocks())


async def every_stored_id(repo: Repository) -> bytes:
    ids, _ = await load_stored_ids(repo.storage, repo.write_keys.meta_key, DiskIdSet)
    with ids:
        return b"".join(ids.sorted_blocks())


async def test_the_next_backup_reads_the_kept_ids_and_only_new_index_files(
    repo: Repository, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    source = build_tree(tmp_path / "src", {"a.bin": random_bytes(50_000, 1), "d/b.txt": "two"})
    await backup(repo, [str(source)], cache_dir=str(cache))
    assert kept_file(repo, cache).stat().st_mode & 0o777 == 0o600
    reused, ids = await loaded(repo, cache)
    assert reused and ids == await every_stored_id(repo)

    (source / "c.bin").write_bytes(random_bytes(40_000, 2))
    await backup(repo, [str(source)], cache_dir=str(cache))
    reused, ids = await loaded(repo, cache)
    assert reused and ids == await every_stored_id(repo)
    # A backup by another machine (no cache here) wrote index files the kept set lacks:
    # they are read on top of it.
    (source / "e.bin").write_bytes(random_bytes(30_000, 3))
    await backup(repo, [str(source)], cache_dir=str(tmp_path / "elsewhere"))
    reused, ids = await loaded(repo, cache)
    assert reused and ids == await every_stored_id(repo)


async def test_after_a_prune_the_kept_ids_are_not_trusted_and_nothing_is_lost(
    repo: Repository, tmp_path: Path
) -> None:
    """The one way a kept set could lose data: it names a blob that prune deleted, and the
    next backup takes that blob as stored. Here the blob comes back after it was pruned."""
    cache = tmp_path / "cache"
    source = build_tree(tmp_path / "src", {"keep.txt": "stays", "gone.bin": random_bytes(60_000, 7)})
    first_id, _ = await backup(repo, [str(source)], cache_dir=str(cache))
    (source / "gone.bin").unlink()
    await backup(repo, [str(source)], cache_dir=str(cache))
    await forget(repo, [first_id])
    result = await prune(repo)
    assert result.bytes_freed > 50_000  # gone.bin's blob left the repository
    reused, ids = await loaded(repo, cache)
    assert not reused and ids == await every_stored_id(repo)

    (source / "gone.bin").write_bytes(random_bytes(60_000, 7))
    third_id, third = await backup(repo, [str(source)], cache_dir=str(cache))
    assert third.stats.added_size > 50_000, "gone.bin was stored again, not taken as stored"
    fresh = await reopen(repo)
    assert (await check(fresh, read_data=True)).errors == []
    assert (await restore(fresh, third_id, str(tmp_path / "out"))).errors == []
    assert_manifests_equal(tree_manifest(restored_path(tmp_path / "out", source)), tree_manifest(source))


@pytest.mark.parametrize("damage", ["flip a byte of the body", "flip a byte of the trailer", "cut short",
                                    "empty", "another repository's"])
async def test_a_damaged_or_foreign_kept_set_is_not_used(
    repo: Repository, tmp_path: Path, damage: str
) -> None:
    cache = tmp_path / "cache"
    source = build_tree(tmp_path / "src", {"a.bin": random_bytes(50_000, 1)})
    await backup(repo, [str(source)], cache_dir=str(cache))
    path = kept_file(repo, cache)
    data = bytearray(path.read_bytes())
    if damage == "flip a byte of the body":
        data[len(data) // 3] ^= 1
    elif damage == "flip a byte of the trailer":
        data[-10] ^= 1
    elif damage == "cut short":
        del data[len(data) // 2 :]
    elif damage == "empty":
        data.clear()
    else:
        other_cache = tmp_path / "other-cache"
        other_source = build_tree(tmp_path / "other-src", {"x": random_bytes(1000, 9)})
        other_repo = await new_repo(tmp_path / "other-repo")
        await backup(other_repo, [str(other_source)], cache_dir=str(other_cache))
        data = bytearray(kept_file(other_repo, other_cache).read_bytes())
        await other_repo.close()
    path.write_bytes(data)
    reused, ids = await loaded(repo, cache)
    assert not reused and ids == await every_stored_id(repo)
    # The backup goes on (reading every index file) and puts a good set in place.
    (source / "b.bin").write_bytes(random_bytes(20_000, 2))
    await backup(repo, [str(source)], cache_dir=str(cache))
    reused, ids = await loaded(repo, cache)
    assert reused and ids == await every_stored_id(repo)
    assert (await check(await reopen(repo), read_data=True)).errors == []


async def test_an_index_file_that_supersedes_a_kept_one_makes_it_unused(repo: Repository, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    source = build_tree(tmp_path / "src", {"a.bin": random_bytes(50_000, 1)})
    await backup(repo, [str(source)], cache_dir=str(cache))
    index_files = sorted(await index_file_ids(repo.storage))
    await write_index_file(repo.storage, repo.write_keys.meta_key, [], supersedes=index_files[:1])
    reused, _ = await loaded(repo, cache)
    assert not reused


async def test_a_kept_set_that_cannot_be_written_does_not_fail_the_backup(
    repo: Repository, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{repo.config.id}.ids.tmp").mkdir()  # where the set is written first: not a file
    (cache / f"{repo.config.id}.ids.tmp" / "x").write_text("keeps the folder from being removed")
    source = build_tree(tmp_path / "src", {"a.bin": random_bytes(50_000, 1)})
    snapshot_id, _ = await backup(repo, [str(source)], cache_dir=str(cache))
    assert not kept_file(repo, cache).exists()
    assert (await restore(repo, snapshot_id, str(tmp_path / "out"))).errors == []
    assert os.listdir(cache / f"{repo.config.id}.ids.tmp") == ["x"]



async def test_many_runs_are_merged_into_one_when_kept(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("timevault.core.repository.idruns.BUFFER_IDS", 2)
    monkeypatch.setattr("timevault.core.archiver.known_ids.MAX_RUNS", 1)
    cache = tmp_path / "cache"
    source = build_tree(tmp_path / "src", {f"d{i}/f{j}": f"file {i} {j}" for i in range(3) for j in range(4)})
    await backup(repo, [str(source)], cache_dir=str(cache))
    stored = await StoredIds.load(repo, str(cache), None)
    with stored.ids:
        assert stored.reused and stored.ids.run_count == 1
        assert b"".join(stored.ids.sorted_blocks()) == await every_stored_id(repo)


async def test_a_small_repository_keeps_no_set(repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    source = build_tree(tmp_path / "src", {"a.bin": random_bytes(50_000, 1), "b.txt": "two"})
    await backup(repo, [str(source)], cache_dir=str(cache))
    assert kept_file(repo, cache).exists()
    monkeypatch.setattr("timevault.core.archiver.known_ids.KEEP_FROM", 1000)
    (source / "c.txt").write_text("three")
    await backup(repo, [str(source)], cache_dir=str(cache))
    assert not kept_file(repo, cache).exists(), "the one kept before is removed"
    reused, ids = await loaded(repo, cache)
    assert not reused and ids == await every_stored_id(repo)


async def test_a_new_index_file_gone_while_read_means_reading_them_all(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    source = build_tree(tmp_path / "src", {"a.bin": random_bytes(50_000, 1)})
    await backup(repo, [str(source)], cache_dir=str(cache))

    async def listed_then_gone(storage: object) -> set[str]:  # as if a compaction removed one
        return await index_file_ids(repo.storage) | {"0" * 64}

    monkeypatch.setattr("timevault.core.archiver.known_ids.index_file_ids", listed_then_gone)
    reused, ids = await loaded(repo, cache)
    assert not reused and ids == await every_stored_id(repo)
