"""forget + prune: remaining snapshots stay whole, space is freed, locks are respected."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from timevault.core.archiver import backup
from timevault.core.checker import check
from timevault.core.prune import PruneOptions, _Run, forget, prune
from timevault.core.repository.format import BlobType, Lock
from timevault.core.repository.index import decode_index_file, pack_object_name, write_index_file
from timevault.core.repository.pack import build_pack
from timevault.core.repository.repo import Repository, RepositoryError, RepositoryLocked
from timevault.core.restorer import restore
from timevault.core.storage import LocalStorage
from timevault.core.storage.base import ObjectInfo

from .conftest import (
    PASSWORD,
    assert_manifests_equal,
    build_tree,
    random_bytes,
    reopen,
    repo_bytes,
    restored_path,
    tree_manifest,
)
from .test_formats import _encode


async def _three_snapshots(repo: Repository, tmp_path: Path) -> tuple[Path, list[tuple[str, dict]]]:
    source = build_tree(
        tmp_path / "src", {"shared.bin": random_bytes(800_000, 1), "v.bin": random_bytes(600_000, 2)}
    )
    states = []
    for i in range(3):
        (source / "v.bin").write_bytes(random_bytes(600_000, 10 + i))
        (source / f"only-{i}.txt").write_text(f"snapshot {i}")
        snapshot_id, _ = await backup(repo, [str(source)])
        states.append((snapshot_id, tree_manifest(source)))
        (source / f"only-{i}.txt").unlink()
    return source, states


async def test_forget_and_prune_keep_the_rest_restorable(small_repo: Repository, tmp_path: Path) -> None:
    repo = small_repo
    source, states = await _three_snapshots(repo, tmp_path)
    repo_path = Path(repo.storage.location)
    before = repo_bytes(repo_path)

    removed = await forget(repo, [states[1][0][:10]])
    assert removed == [states[1][0]]
    assert [s for s, _ in await repo.list_snapshots()] == [states[0][0], states[2][0]]
    result = await prune(repo)
    assert result.bytes_freed > 500_000
    after = repo_bytes(repo_path)
    assert after < before - 500_000

    fresh = await reopen(repo)
    assert (await check(fresh, read_data=True)).errors == []
    for i in (0, 2):
        snapshot_id, expected = states[i]
        target = tmp_path / f"out{i}"
        assert (await restore(fresh, snapshot_id, str(target))).errors == []
        assert_manifests_equal(tree_manifest(restored_path(target, source)), expected)

    # Forget everything but the last, prune again: still whole, smaller still.
    # Snapshot 0's data pack also holds shared.bin, still needed: it is repacked, not dropped.
    await forget(fresh, [states[0][0]])
    second = await prune(fresh, PruneOptions(repack_below=1.0))  # repack any partly used pack
    assert second.packs_repacked >= 1
    assert repo_bytes(repo_path) < after
    final = await reopen(repo)
    assert (await check(final, read_data=True)).errors == []
    assert (await restore(final, "latest", str(tmp_path / "last"))).errors == []
    assert_manifests_equal(tree_manifest(restored_path(tmp_path / "last", source)), states[2][1])


async def test_prune_with_nothing_to_do_changes_nothing(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": random_bytes(10_000, 1)})
    await backup(repo, [str(source)])
    before = {p.name for p in (Path(repo.storage.location) / "data").rglob("*") if p.is_file()}
    result = await prune(repo)
    assert result.packs_deleted == 0 and result.packs_repacked == 0
    assert {p.name for p in (Path(repo.storage.location) / "data").rglob("*") if p.is_file()} == before
    assert (await check(await reopen(repo), read_data=True)).errors == []


async def test_prune_removes_unindexed_packs_once_old_enough(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": random_bytes(10_000, 1)})
    snapshot_id, _ = await backup(repo, [str(source)])
    # What a backup killed between writing a pack and its index file leaves behind.
    pack_id, data, _ = build_pack(repo.write_keys.meta_key, [_encode(random_bytes(50_000, 7), BlobType.DATA)])
    await repo.storage.put(pack_object_name(pack_id), data)
    orphan = Path(repo.storage.location) / pack_object_name(pack_id)
    assert any("not in the index" in n for n in (await check(await reopen(repo))).notes)

    # A pack seen unindexed for the first time may be a running backup's, about to get its index.
    first = await prune(await reopen(repo))
    assert orphan.exists() and first.orphans_pending == 1 and first.packs_deleted == 0
    result = await prune(await reopen(repo), PruneOptions(orphan_age=0))
    assert not orphan.exists()
    assert result.packs_deleted == 1 and result.bytes_freed == len(data)
    fresh = await reopen(repo)
    checked = await check(fresh, read_data=True)
    assert checked.errors == [] and checked.notes == []
    assert (await restore(fresh, snapshot_id, str(tmp_path / "out"))).errors == []


async def test_prune_marks_while_a_backup_runs_and_deletes_once_it_ended(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": random_bytes(20_000, 3)})
    first, _ = await backup(repo, [str(source)])
    (source / "a").write_bytes(random_bytes(20_000, 4))
    await backup(repo, [str(source)])
    await prune(repo)  # nothing to delete; the index is now one file prune wrote
    await forget(repo, [first])
    packs = {p.name for p in (Path(repo.storage.location) / "data").rglob("*") if p.is_file()}
    other = await reopen(repo)
    async with other.lock(kind="backup"):
        # A backup holds its lock: prune neither refuses nor waits; it marks and leaves the data.
        result = await prune(repo)
        assert result.marked and result.packs_deleted == 0 and result.packs_pending >= 1
        checked = await check(await reopen(repo))
        assert checked.errors == [] and any("prune marked them" in n for n in checked.notes), checked.notes
        assert {p.name for p in (Path(repo.storage.location) / "data").rglob("*") if p.is_file()} == packs
        # Other backups may run alongside.
        await backup(repo, [str(source)])
    # The backup that started before the mark has ended: the next prune deletes the marked packs.
    after = await prune(repo)
    assert after.packs_deleted >= 1 and after.packs_pending == 0
    assert [p for p in (Path(repo.storage.location) / "locks").iterdir()] == []
    fresh = await reopen(repo)
    assert (await check(fresh, read_data=True)).errors == []
    assert (await restore(fresh, "latest", str(tmp_path / "out"))).errors == []


async def test_a_running_backups_new_packs_are_not_marked(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": random_bytes(20_000, 3)})
    snapshot_id, _ = await backup(repo, [str(source)])
    await forget(repo, [snapshot_id])
    packs = {p.name for p in (Path(repo.storage.location) / "data").rglob("*") if p.is_file()}
    other = await reopen(repo)
    async with other.lock(kind="backup"):
        # Packs only backups' index files list may be the running backup's, its snapshot not
        # saved yet: left for a prune that runs when no backup does.
        result = await prune(repo)
        assert result.packs_pending == 0 and result.packs_deleted == 0
    assert {p.name for p in (Path(repo.storage.location) / "data").rglob("*") if p.is_file()} == packs
    assert (await prune(repo)).packs_deleted == len(packs)


async def test_one_prune_at_a_time(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": "x"})
    await backup(repo, [str(source)])
    other = await reopen(repo)
    async with other.lock(kind="prune"):
        with pytest.raises(RepositoryLocked, match="prune"):
            await prune(repo)
        await backup(repo, [str(source)])  # a prune never blocks a backup
    assert len(await repo.list_snapshots()) == 2


async def test_backup_refused_while_a_repair_holds_the_exclusive_lock(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": "x"})
    other = await reopen(repo)
    async with other.lock(exclusive=True, kind="repair"):
        with pytest.raises(RepositoryLocked, match="exclusive"):
            await backup(repo, [str(source)])
        with pytest.raises(RepositoryLocked, match="exclusive"):
            await prune(repo)
    assert await repo.list_snapshots() == []


async def test_prune_indexes_again_what_a_lost_index_hid(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": random_bytes(10_000, 1), "b": random_bytes(10_000, 2)})
    await backup(repo, [str(source)])
    for index_file in (Path(repo.storage.location) / "index").iterdir():
        index_file.unlink()
    packs = {p for p in (Path(repo.storage.location) / "data").rglob("*") if p.is_file()}
    result = await prune(await reopen(repo), PruneOptions(orphan_age=0))
    # Every pack holds what the snapshot needs: found in the packs' own headers, indexed again.
    assert result.packs_rescued == len(packs) and result.packs_deleted == 0
    assert {p for p in (Path(repo.storage.location) / "data").rglob("*") if p.is_file()} == packs
    fresh = await reopen(repo)
    assert (await check(fresh, read_data=True)).errors == []
    assert (await restore(fresh, "latest", str(tmp_path / "out"))).errors == []


async def test_prune_stops_on_damage(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": random_bytes(10_000, 1), "b": random_bytes(10_000, 2)})
    await backup(repo, [str(source)])
    (source / "a").write_bytes(random_bytes(10_000, 5))
    await backup(repo, [str(source)])
    await forget(repo, [(await repo.list_snapshots())[0][0]])
    data = sorted(p for p in (Path(repo.storage.location) / "data").rglob("*") if p.is_file())
    data[0].unlink()  # a pack the remaining snapshot needs
    before = {p for p in Path(repo.storage.location).rglob("*") if p.is_file()}
    with pytest.raises(RepositoryError, match="damage"):
        await prune(await reopen(repo), PruneOptions(orphan_age=0))
    # Nothing was deleted: the data may still be recoverable.
    after = {p for p in Path(repo.storage.location).rglob("*") if p.is_file()}
    assert {p for p in before - after if "locks" not in p.parts} == set()


async def test_stale_and_foreign_locks_do_not_block(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": "x"})
    past = time.time() - 3600
    stale = Lock(exclusive=True, hostname="gone", pid=1, time=past - 60, expires=past)
    await repo.storage.put("locks/" + "ab" * 16, repo.encrypt_meta(msgspec.msgpack.encode(stale), b"lock"))
    await repo.storage.put("locks/" + "cd" * 16, b"not a lock of this repository")
    snapshot_id, _ = await backup(repo, [str(source)])  # an expired exclusive lock is ignored
    await forget(repo, [snapshot_id])
    await prune(repo)
    assert await repo.list_snapshots() == []


class _CompactsAfterListing:
    """A real folder whose index is compacted, as a concurrent prune does (the superseding file
    first, then the old ones deleted), right after a reader listed `index/`: the race a prune
    and a restore can run into, made to happen on demand."""

    def __init__(self, inner: LocalStorage, meta_key: bytes) -> None:
        self._inner, self._meta_key, self.compactions = inner, meta_key, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        async for info in self._inner.list(prefix):
            yield info
        if prefix == "index/" and self.compactions == 0:
            self.compactions += 1
            names = [info.name async for info in self._inner.list("index/")]
            packs = [pack for name in names
                     for pack in decode_index_file(self._meta_key, await self._inner.get(name)).packs]
            await write_index_file(self._inner, self._meta_key, packs,
                                   supersedes=[name.removeprefix("index/") for name in names], compacted=True)
            for name in names:
                await self._inner.delete(name)


async def test_a_restore_reads_the_index_while_a_prune_compacts_it(repo: Repository, tmp_path: Path) -> None:
    source, states = await _three_snapshots(repo, tmp_path)
    assert len([info async for info in repo.storage.list("index/")]) > 1
    racing = _CompactsAfterListing(LocalStorage(Path(repo.storage.location)), repo.write_keys.meta_key)
    reader = await Repository.open(racing, PASSWORD)  # type: ignore[arg-type]
    await restore(reader, states[-1][0], str(tmp_path / "out"))
    assert racing.compactions == 1
    assert_manifests_equal(tree_manifest(restored_path(tmp_path / "out", source)), states[-1][1])
    assert len([info async for info in repo.storage.list("index/")]) == 1


async def test_a_restore_started_before_a_mark_keeps_its_packs(repo: Repository, tmp_path: Path) -> None:
    source = build_tree(tmp_path / "src", {"a": random_bytes(20_000, 5)})
    first, _ = await backup(repo, [str(source)])
    (source / "a").write_bytes(random_bytes(20_000, 6))
    await backup(repo, [str(source)])
    await prune(repo)
    reader = await reopen(repo)
    async with reader.read_lock() as held:
        assert held is not None and held.kind == "restore"
        old_index = await reader.index()  # loaded before the mark, as a restore under way has
        await forget(repo, [first])
        result = await prune(repo)
        assert result.marked and result.packs_deleted == 0 and result.packs_pending >= 1
        for pack_id in old_index.packs:  # every pack the reader's index names is still there
            await repo.storage.stat(pack_object_name(pack_id))
        assert (await restore(reader, "latest", str(tmp_path / "out"))).errors == []
    after = await prune(repo)
    assert after.packs_deleted >= 1 and after.packs_pending == 0
    assert list((Path(repo.storage.location) / "locks").iterdir()) == []


async def test_what_prune_keeps_is_the_union_of_every_snapshots_references(repo: Repository, tmp_path: Path) -> None:
    """Prune merges each full list once, less what every delta on it removed, plus what each
    delta added: the same set as the union of every snapshot's own list, never less."""
    source = build_tree(tmp_path / "src", {f"f{i}.bin": random_bytes(700, i) for i in range(60)})
    for round_ in range(5):
        (source / f"f{round_}.bin").unlink()  # removed from the next list
        (source / f"new{round_}.bin").write_bytes(random_bytes(700, 100 + round_))
        await backup(repo, [str(source)])
    snapshots = dict(await repo.list_snapshots())
    records = [await repo._references_file(s.references) for s in snapshots.values() if s.references]
    assert any(r.base is not None and r.removed for r in records), "the scenario needs deltas that remove"
    expected: set[bytes] = set()
    for snapshot_id in snapshots:
        expected |= await repo.snapshot_references(snapshot_id)
    run = _Run(repo, PruneOptions(), None)
    for chosen in (snapshots, dict(list(snapshots.items())[1:3])):
        live, named = await run.needed_by(chosen)
        want = set().union(*[await repo.snapshot_references(s) for s in chosen])
        assert b"".join(live.sorted_blocks()) == b"".join(sorted(want))
        live.close()
        assert {s.references for s in chosen.values()} <= named
    assert len(expected) > 60


async def test_prune_writes_index_files_of_bounded_size(repo: Repository, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever loads the index decodes a file at a time: prune cuts what it writes by blobs."""
    from timevault.core import prune as prune_module

    monkeypatch.setattr(prune_module, "INDEX_BLOBS_PER_FILE", 5)
    source = build_tree(tmp_path / "src", {f"f{i}.txt": f"file {i}" for i in range(40)})
    first, _ = await backup(repo, [str(source)])
    (source / "f0.txt").write_text("changed")
    await backup(repo, [str(source)])
    await forget(repo, [first])
    assert (await prune(repo, PruneOptions(repack_below=1.0))).marked
    counts = []
    async for info in repo.storage.list("index/"):
        file = decode_index_file(repo.write_keys.meta_key, await repo.storage.get(info.name))
        assert file.compacted
        counts.append([len(pack.blobs) for pack in file.packs])
    assert len(counts) > 1
    for packs in counts:  # at most 5 blobs, or a single pack that alone holds more
        assert sum(packs) <= 5 or len(packs) == 1, counts
    fresh = await reopen(repo)
    assert (await check(fresh, read_data=True)).errors == []
