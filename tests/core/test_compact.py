"""Compact structures that keep a backup's memory flat: id sets and maps, the index, the
references delta, and the files cache kept one folder to a row."""

from __future__ import annotations

import gc
import os
import sqlite3
import weakref
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timevault.core.archiver import backup, walk
from timevault.core.chunker import ChunkerParams
from timevault.core.repository import compact, references
from timevault.core.repository.compact import IdMap, IdSet
from timevault.core.repository.format import BlobType, IndexPack, PackBlob
from timevault.core.repository.index import BlobLocation, Index
from timevault.core.repository.repo import Repository
from timevault.core.restorer import restore

from .conftest import assert_manifests_equal, build_tree, restored_path, tree_manifest

# Few distinct first bytes, so that buckets hold several ids and ids share prefixes.
ids = st.binary(min_size=32, max_size=32).map(lambda b: bytes([b[0] % 3, b[1] % 2]) + b[2:])


@pytest.fixture
def small_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Merge after a few ids, so that examples exercise merged records, not only the dict."""
    monkeypatch.setattr(compact, "MERGE_AT", 5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ids, st.binary(min_size=6, max_size=6))), st.lists(ids))
def test_idmap_answers_as_a_dict_does(items: list[tuple[bytes, bytes]], probes: list[bytes]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compact, "MERGE_AT", 5)
        mapping = IdMap(6)
        expected: dict[bytes, bytes] = {}
        for blob_id, value in items:
            assert mapping.add(blob_id, value) == (blob_id not in expected)
            expected.setdefault(blob_id, value)  # the first value is kept
        assert len(mapping) == len(expected)
        for blob_id in [*expected, *probes]:
            assert mapping.get(blob_id) == expected.get(blob_id)
            assert (blob_id in mapping) == (blob_id in expected)
        assert sorted(mapping) == sorted(expected)
        assert mapping.sorted_ids() == b"".join(sorted(expected))


@settings(max_examples=100, deadline=None)
@given(st.sets(ids), st.lists(ids))
def test_idset_from_sorted_round_trips(members: set[bytes], probes: list[bytes]) -> None:
    data = b"".join(sorted(members))
    restored = IdMap.from_sorted(data)
    assert len(restored) == len(members) and restored.sorted_ids() == data
    for blob_id in [*members, *probes]:
        assert (blob_id in restored) == (blob_id in members)
        assert (blob_id in references.SortedIds(data)) == (blob_id in members)


def test_an_id_spanning_two_records_is_not_found(small_merges: None) -> None:
    """bytes.find may match across record boundaries: only a match at a record's start counts."""
    a = bytes([0, 0]) + bytes(range(2, 16)) + bytes([0, 0]) + bytes(range(18, 32))
    b = bytes([0, 0]) + bytes(range(102, 132))
    inside = a[16:] + b[:16]  # in the same bucket, and in the records where a ends and b begins
    mapping = IdSet([a, b, *(bytes([0, 0, i]) + bytes(29) for i in range(5))])
    group = mapping._groups[0]
    assert a + b in group, "a and b lie side by side"
    assert a in mapping and b in mapping
    assert inside not in mapping
    assert mapping.get(a[:31]) is None and b"short" not in mapping


def test_unsorted_or_torn_lists_are_refused() -> None:
    x, y = bytes([1]) + bytes(31), bytes([2]) + bytes(31)
    with pytest.raises(ValueError):
        IdMap.from_sorted(y + x)
    with pytest.raises(ValueError):
        IdMap.from_sorted(x + y[:5])
    with pytest.raises(ValueError):
        references.SortedIds(y + x)
    assert references.small_delta(IdSet([x]), y + x) is None  # a full list is written instead


@settings(max_examples=100, deadline=None)
@given(st.sets(ids, min_size=1), st.sets(ids))
def test_small_delta_is_the_set_difference(base: set[bytes], new: set[bytes]) -> None:
    delta = references.small_delta(IdSet(new), b"".join(sorted(base)))
    added, removed = new - base, base - new
    if len(added) + len(removed) > len(base) // 4:
        assert delta is None
    else:
        assert delta == (b"".join(sorted(added)), b"".join(sorted(removed)))


packs = st.lists(
    st.tuples(
        st.lists(st.tuples(ids, st.sampled_from(BlobType), st.integers(0, 2**40), st.integers(0, 2**33)),
                 max_size=8),
        st.integers(-1, 3),
    ),
    max_size=6,
)


@settings(max_examples=100, deadline=None)
@given(packs)
def test_index_answers_as_the_dicts_it_replaced(spec: list[tuple[list, int]]) -> None:
    """Out-of-range numbers (a hostile index) read back exactly; the first pack keeps a blob."""
    index = Index()
    blobs: dict[bytes, BlobLocation] = {}
    entries: dict[str, IndexPack] = {}
    for n, (pack_blobs, key) in enumerate(spec):
        keys = [bytes([n, k]) for k in range(2)]
        entry = IndexPack(
            f"pack{n}", 100 + n, [PackBlob(i, t, o, ln, ln + 1, key) for i, t, o, ln in pack_blobs], keys
        )
        index.add_pack(entry)
        entries[entry.id] = entry
        for blob in entry.blobs:
            sealed = keys[blob.key] if 0 <= blob.key < len(keys) else b""
            blobs.setdefault(
                blob.id, BlobLocation(entry.id, blob.type, blob.offset, blob.length, blob.raw_length, sealed)
            )
    assert dict(index.blobs) == blobs and len(index.blobs) == len(blobs)
    assert dict(index.packs) == entries
    assert index.stored_size() == sum(p.size for p in entries.values())
    for blob_id in blobs:
        assert blob_id in index and index.blobs[blob_id] == blobs[blob_id]
    assert index.pack_size("pack0") == (100 if spec else None) and index.pack_size("none") is None
    assert index.blobs.get(bytes(32)) == blobs.get(bytes(32))


async def test_incremental_with_the_files_cache_reuses_unchanged_and_reads_changed(
    repo: Repository, tmp_path: Path
) -> None:
    spec = {f"d{d}/f{f}.txt": f"folder {d} file {f}" for d in range(3) for f in range(4)}
    source = build_tree(tmp_path / "src", spec)
    cache = tmp_path / "cache"
    first_id, first = await backup(repo, [str(source)], cache_dir=str(cache))
    assert first.stats.unchanged_files == 0

    (cache_file,) = cache.glob("*.files")
    with sqlite3.connect(cache_file) as db:
        rows = db.execute("SELECT key, value FROM folders").fetchall()
    assert len(rows) == 3, "one row per folder that holds files"
    assert all(b"folder" not in value and b"f0.txt" not in value for _, value in rows), "rows are encrypted"

    (source / "d1" / "f2.txt").write_text("changed, and longer than before")
    (source / "d2" / "new.txt").write_text("new")
    (source / "d0" / "f0.txt").unlink()
    second_id, second = await backup(repo, [str(source)], cache_dir=str(cache))
    assert second.parent == first_id
    assert second.stats.files == 12 and second.stats.unchanged_files == 10
    target = tmp_path / "out"
    assert (await restore(repo, second_id, str(target))).errors == []
    assert_manifests_equal(tree_manifest(restored_path(target, source)), tree_manifest(source))

    # Rows swapped between folders do not open (each is bound to its folder): the files of
    # those two folders are read again, the third folder's are reused.
    with sqlite3.connect(cache_file) as db:
        (k0, v0), (k1, v1) = db.execute("SELECT key, value FROM folders ORDER BY key LIMIT 2").fetchall()
        db.execute("UPDATE folders SET value = ? WHERE key = ?", (v1, k0))
        db.execute("UPDATE folders SET value = ? WHERE key = ?", (v0, k1))
    _, third = await backup(repo, [str(source)], cache_dir=str(cache))
    assert third.stats.files == 12 and third.stats.unchanged_files in (3, 4, 5)


def test_small_files_are_read_many_ahead_without_leaking_descriptors(tmp_path: Path) -> None:
    """More files than the read-ahead window, one replaced by a symlink after the listing, one
    removed and one that grew: each is read as it is or refused, and every descriptor is closed."""
    count = walk.READ_AHEAD_FILES * 2 + 7
    for i in range(count):
        (tmp_path / f"f{i:04d}").write_bytes(b"%d" % i * (i % 50 + 1))
    entries = []
    for path in sorted(tmp_path.iterdir()):
        st = os.lstat(path)
        entries.append(walk.Entry(path.name.encode(), os.fsencode(path), st, walk.kind_of(st.st_mode)))
    (tmp_path / "f0003").unlink()
    (tmp_path / "f0003").symlink_to(tmp_path / "f0004")
    (tmp_path / "f0300").unlink()
    with open(tmp_path / "f0400", "ab") as f:
        f.write(b"grown")
    warnings = walk.read_small_files(entries, ChunkerParams(), b"k" * 32)
    assert not [fd for fd in os.listdir("/proc/self/fd") if _points_into(fd, tmp_path)], "left open"
    assert [e.name for e in entries if e.error] == [b"f0003", b"f0300"] and len(warnings) == 2
    for entry in entries:
        if entry.error is None:
            assert entry.chunked is not None
            data = (tmp_path / entry.name.decode()).read_bytes()
            assert entry.chunked.size == len(data)
            assert b"".join(bytes(chunk) for _, chunk in entry.chunked.chunks) == data
            assert entry.changed_while_reading == (entry.name == b"f0400")


async def test_a_backup_deduplicates_against_ids_only_and_the_repo_sees_its_packs(
    repo: Repository, tmp_path: Path
) -> None:
    """An in-process backup with a files cache loads the index as ids only; the repository's own
    index (with locations) loaded before the backup is dropped, so a restore through the same
    object finds the new packs."""
    source = build_tree(tmp_path / "src", {"a.txt": "one", "b/c.txt": "two"})
    first_id, _ = await backup(repo, [str(source)], cache_dir=str(tmp_path / "cache"))
    assert (await restore(repo, first_id, str(tmp_path / "out1"))).errors == []  # loads repo's index
    (source / "b" / "d.txt").write_text("three, new")
    second_id, second = await backup(repo, [str(source)], cache_dir=str(tmp_path / "cache"))
    assert second.stats.unchanged_files == 2
    assert (await restore(repo, second_id, str(tmp_path / "out2"))).errors == []
    assert_manifests_equal(tree_manifest(restored_path(tmp_path / "out2", source)), tree_manifest(source))

    ids_only = await repo.known_ids()
    full = await repo.index()
    assert len(ids_only.blobs) == len(full.blobs) and all(blob_id in ids_only for blob_id in full.blobs)
    with pytest.raises(LookupError):
        ids_only.blobs.get(next(iter(full.blobs)))


def _points_into(fd: str, folder: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder))
    except OSError:
        return False


async def test_a_files_cache_that_cannot_be_written_does_not_fail_the_backup(
    repo: Repository, tmp_path: Path
) -> None:
    source = build_tree(tmp_path / "src", {"a.txt": "one", "d/b.txt": "two"})
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache folder should be")
    _, first = await backup(repo, [str(source)], cache_dir=str(not_a_folder))
    _, second = await backup(repo, [str(source)], cache_dir=str(not_a_folder))
    assert first.stats.files == second.stats.files == 2
    assert second.stats.unchanged_files == 2, "the parent's trees served instead"
    assert not_a_folder.read_text().startswith("a file")


@settings(max_examples=200, deadline=None)
@given(st.lists(ids), st.lists(st.lists(ids)), st.lists(ids))
def test_add_sorted_is_a_set_union_less_what_is_left_out(before: list[bytes], lists: list[list[bytes]],
                                                        left_out: list[bytes]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compact, "MERGE_AT", 5)
        ids_set = IdSet(before)
        expected = set(before)
        for position, listed in enumerate(lists):
            leave = set(left_out) if position % 2 else set()
            ids_set.add_sorted(b"".join(sorted(listed)), leave)  # duplicates in a list are dropped
            expected |= set(listed) - leave
        assert len(ids_set) == len(expected)
        assert bytes(ids_set.sorted_ids()) == b"".join(sorted(expected))
        assert all(blob_id in ids_set for blob_id in expected)


def test_add_sorted_refuses_what_is_not_a_sorted_list() -> None:
    first, second = bytes(31) + b"\x01", bytes(31) + b"\x02"
    with pytest.raises(ValueError, match="sorted"):
        IdSet().add_sorted(second + first)
    with pytest.raises(ValueError, match="whole"):
        IdSet().add_sorted(first + b"x")
    with pytest.raises(ValueError, match="set"):
        IdMap(4).add_sorted(first)


def test_an_index_is_freed_as_soon_as_it_is_dropped() -> None:
    """No reference cycle: an index of a million blobs must not wait for the cyclic garbage
    collector (prune loads a new index right after letting go of the old one)."""
    index = Index()
    index.add_pack(IndexPack("p" * 64, 100, [PackBlob(os.urandom(32), BlobType.DATA, 0, 10, 10, 0)], [b"k"]))
    assert len(index.blobs) == 1 and len(index.packs) == 1
    gone = weakref.ref(index)
    gc.disable()
    try:
        del index
        assert gone() is None
    finally:
        gc.enable()
