"""Failures during a backup or restore: storage errors, cancelation, concurrent backups."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.faulty_storage import Fault, FaultyStorage
from timevault.core.archiver import BackupCanceled, backup
from timevault.core.checker import check
from timevault.core.repository.format import BlobType
from timevault.core.repository.repo import Repository
from timevault.core.restorer import RestoreCanceled, restore
from timevault.core.storage import LocalStorage, StorageError

from .conftest import (
    PASSWORD,
    assert_manifests_equal,
    build_tree,
    random_bytes,
    reopen,
    restored_path,
    tree_manifest,
)


def _locks(repo: Repository) -> list[Path]:
    locks = Path(repo.storage.location) / "locks"
    return list(locks.iterdir()) if locks.exists() else []


@pytest.mark.parametrize("what", ["data/", "index/", "snapshots/"])
async def test_storage_failure_fails_the_backup_cleanly(repo: Repository, tmp_path: Path, what: str) -> None:
    source = build_tree(tmp_path / "src", {"a": random_bytes(100_000, 1), "b/c": random_bytes(50_000, 2)})
    faulty = FaultyStorage(
        LocalStorage(repo.storage.location), [Fault("put", StorageError("disk on fire"), name=f"^{what}")]
    )
    failing = await Repository.open(faulty, PASSWORD)
    with pytest.raises(StorageError, match="disk on fire"):
        await backup(failing, [str(source)])
    faulty.assert_all_fired()
    assert await repo.list_snapshots() == []
    assert _locks(repo) == [], "a failed backup must release its lock"
    fresh = await reopen(repo)
    assert (await check(fresh)).errors == []

    snapshot_id, _ = await backup(fresh, [str(source)])
    assert (await restore(fresh, snapshot_id, str(tmp_path / "out"))).errors == []
    assert_manifests_equal(tree_manifest(restored_path(tmp_path / "out", source)), tree_manifest(source))


async def test_canceled_backup_writes_no_snapshot(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {f"f{i}": random_bytes(1000, i) for i in range(20)})
    cancel = asyncio.Event()
    cancel.set()
    with pytest.raises(BackupCanceled):
        await backup(repo, [str(source)], cancel=cancel)
    assert await repo.list_snapshots() == []
    assert _locks(repo) == []


async def test_canceled_restore_leaves_no_target(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": random_bytes(100_000, 1)})
    snapshot_id, _ = await backup(repo, [str(source)])
    cancel = asyncio.Event()
    cancel.set()
    target = tmp_path / "out"
    with pytest.raises(RestoreCanceled):
        await restore(repo, snapshot_id, str(target), cancel=cancel)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if "restore-" in p.name] == []


async def test_unreadable_data_pack_fails_its_files_not_the_restore(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": random_bytes(100_000, 1), "b": "small", "empty": ""})
    snapshot_id, _ = await backup(repo, [str(source)])
    index = await repo.index()
    data_packs = [p.id for p in index.packs.values() if all(b.type == BlobType.DATA for b in p.blobs)]
    assert len(data_packs) == 1
    faulty = FaultyStorage(LocalStorage(repo.storage.location))
    faulty.add(Fault("get", StorageError("network gone"), name=data_packs[0], times=None))
    reading = await Repository.open(faulty, PASSWORD)
    target = tmp_path / "out"
    result = await restore(reading, snapshot_id, str(target))
    faulty.assert_all_fired()
    failed = sorted(e.split(":")[0].rsplit("/", 1)[-1] for e in result.errors)
    assert failed == ["a", "b"], result.errors
    out = restored_path(target, source)
    assert sorted(p.name for p in out.iterdir()) == ["empty"]


async def test_concurrent_backups_into_one_repository(repo: Repository, tmp_path: Path) -> None:
    common = random_bytes(600_000, 9)
    one = build_tree(tmp_path / "one", {"common": common, "own": random_bytes(200_000, 1)})
    two = build_tree(tmp_path / "two", {"common": common, "own": random_bytes(200_000, 2)})
    other = await reopen(repo)
    (id1, _), (id2, _) = await asyncio.gather(backup(repo, [str(one)]), backup(other, [str(two)]))
    fresh = await reopen(repo)
    assert (await check(fresh, read_data=True)).errors == []
    for snapshot_id, source in ((id1, one), (id2, two)):
        target = tmp_path / f"out-{source.name}"
        assert (await restore(fresh, snapshot_id, str(target))).errors == []
        assert_manifests_equal(tree_manifest(restored_path(target, source)), tree_manifest(source))
    assert _locks(repo) == []


async def test_a_pack_write_that_failed_early_is_not_hidden_by_later_ones(tmp_path: Path) -> None:
    """A pack whose write failed while nobody waited on it fails the next add and the flush,
    even when every later write succeeded (its blobs would be missing from the snapshot)."""
    from timevault.core.repository.blobs import EncodedBlob
    from timevault.core.repository.pack import Packer

    faulty = FaultyStorage(LocalStorage(tmp_path / "repo"), [Fault("put", StorageError("quota exceeded"),
                                                                    name="^data/", on_call=1)])
    packer = Packer(faulty, b"k" * 32, pack_size=1000, max_pending=4)
    blobs = [EncodedBlob(bytes([i]) * 32, BlobType.DATA, 600, bytes([i]) * 600, b"s" * 48) for i in range(6)]
    with pytest.raises(StorageError, match="quota exceeded"):
        for blob in blobs:
            await packer.add(blob)
            await asyncio.sleep(0.05)  # let the write of a sealed pack finish (or fail) meanwhile
        await packer.flush()
    with pytest.raises(StorageError, match="quota exceeded"):
        await packer.flush()
    faulty.assert_all_fired()
