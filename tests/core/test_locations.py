"""A restore's blob locations: a table in an unnamed temporary file that answers as the index
does (same rules for superseded files, repeated blobs and odd values), and trees read in
windows of their packs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timevault.core.archiver import backup
from timevault.core.chunker import ChunkerParams
from timevault.core.repository import repo as repo_module
from timevault.core.repository.format import BlobType, IndexPack, PackBlob
from timevault.core.repository.index import Index
from timevault.core.repository.locations import LocationsBuilder
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

# Few distinct first two bytes, so that buckets hold several ids and ids share prefixes.
ids = st.binary(min_size=32, max_size=32).map(lambda b: bytes([b[0] % 3, b[1] % 2]) + b[2:])
# Mostly values that fit a record, sometimes ones that do not (a damaged or hostile index).
values = st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(-5, 2**40))
blobs = st.builds(
    PackBlob,
    st.one_of(ids, ids, ids, st.binary(max_size=40)),
    st.sampled_from(list(BlobType)),
    values,
    values,
    values,
    st.one_of(st.integers(0, 3), st.integers(-2, 70_000)),
)
packs = st.builds(
    IndexPack,
    st.text("0123456789abcdef", min_size=1, max_size=3),
    st.integers(0, 2**40),
    st.lists(blobs, max_size=8),
    st.lists(st.binary(min_size=1, max_size=4), max_size=3),
)
# An index listing: (packs, which earlier files this one supersedes).
listings = st.lists(st.tuples(st.lists(packs, max_size=4), st.sets(st.integers(0, 5))), max_size=6)


@settings(max_examples=200, deadline=None)
@given(listings, st.lists(packs, max_size=2), st.permutations(range(6)), st.lists(ids, max_size=5))
def test_the_table_answers_as_the_index_does(
    tmp_path_factory: pytest.TempPathFactory,
    listing: list[tuple[list[IndexPack], set[int]]],
    unindexed: list[IndexPack],
    arrival: list[int],
    probes: list[bytes],
) -> None:
    temp = tmp_path_factory.mktemp("table")
    names = [f"index/{number:064x}" for number in range(len(listing))]
    superseded = {names[other] for _, others in listing for other in others if other < len(listing)}
    # What `Index.load` keeps: files no other supersedes, in listing order, then recovered packs.
    index = Index()
    for name, (file_packs, _) in zip(names, listing, strict=True):
        if name not in superseded:
            for pack in file_packs:
                index.add_pack(pack)
    for pack in unindexed:
        index.add_pack(pack)
    builder = LocationsBuilder(str(temp))
    # Files arrive in any order (as their reads finish); their place in the listing decides.
    for position in sorted(range(len(listing)), key=lambda p: arrival[p] if p < len(arrival) else p):
        file_packs, others = listing[position]
        supersedes = [names[other].removeprefix("index/") for other in others if other < len(listing)]
        builder.add_file(position, names[position], file_packs, supersedes)
    assert builder.live_packs() == {pack.id for name, (file_packs, _) in zip(names, listing, strict=True)
                                    if name not in superseded for pack in file_packs}
    builder.add_packs(unindexed)
    with builder.finish() as table:
        assert os.listdir(temp) == []  # unnamed files: nothing to clean up, even after a crash
        assert len(table) >= len(index.blobs)
        every = {blob.id for _, (file_packs, _) in enumerate(listing) for pack in file_packs for blob in pack.blobs}
        every |= {blob.id for pack in unindexed for blob in pack.blobs}
        for blob_id in [*every, *probes]:
            assert table.locate(blob_id) == index.blobs.get(blob_id)
            assert (blob_id in table) == (blob_id in index.blobs)
        for pack_id in {pack.id for _, (file_packs, _) in enumerate(listing) for pack in file_packs}:
            assert table.pack_size(pack_id) == index.pack_size(pack_id)
            assert table.has_pack(pack_id) == (pack_id in index.packs)


def test_an_empty_index_makes_an_empty_table(tmp_path: Path) -> None:
    with LocationsBuilder(str(tmp_path)).finish() as table:
        assert len(table) == 0 and table.locate(bytes(32)) is None and table.pack_size("x") is None
    assert os.listdir(tmp_path) == []


async def test_a_repository_table_matches_its_index_and_is_repaired_alike(tmp_path: Path) -> None:
    repo = await new_repo(tmp_path / "repo", ChunkerParams(min_size=4096, avg_size=8192, max_size=16384))
    source = tmp_path / "src"
    build_tree(source, {f"d{i}/f{j}": random_bytes(3000 + 500 * j, seed=i * 10 + j) for i in range(5) for j in range(6)})
    await backup(repo, [str(source)])
    build_tree(source, {"d9/new": random_bytes(40_000, seed=99)})
    await backup(repo, [str(source)])
    index = await (await reopen(repo)).index()
    locations, notes = await repo.blob_locations(str(tmp_path))
    with locations:
        assert notes == []
        assert len(locations) == len(index.blobs)
        for blob_id in index.blobs:
            assert locations.locate(blob_id) == index.blobs[blob_id]
    # One index file lost: both complete the index from the packs' own headers, with the same notes.
    lost = sorted((tmp_path / "repo" / "index").iterdir())[0]
    lost.unlink()
    repaired = await reopen(repo)
    expected_notes = await repaired.repair_index()
    repaired_index = await repaired.index()
    locations, notes = await repo.blob_locations(str(tmp_path))
    with locations:
        assert notes == expected_notes and any("read from their own headers" in note for note in notes)
        for blob_id in repaired_index.blobs:
            assert locations.locate(blob_id) == repaired_index.blobs[blob_id]
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == []


async def test_trees_across_window_edges_restore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows far smaller than the trees: most trees lie across a window's edge (read alone),
    the rest inside one; one window kept, so windows are read again and again."""
    monkeypatch.setattr(repo_module, "TREE_WINDOW", 512)
    monkeypatch.setattr(repo_module, "TREE_WINDOWS_KEPT", 1)
    repo = await new_repo(tmp_path / "repo")
    source = tmp_path / "src"
    spec: dict[str, str | bytes | None] = {f"a{i}/b{j}/c{k}": f"{i}{j}{k}" for i in range(4) for j in range(3)
                                           for k in range(2)}
    spec.update({f"wide/file{i:03d}": b"x" for i in range(150)})
    build_tree(source, spec)
    snapshot_id, _ = await backup(repo, [str(source)])
    result = await restore(await reopen(repo), snapshot_id, str(tmp_path / "out"))
    assert result.errors == []
    assert_manifests_equal(tree_manifest(restored_path(tmp_path / "out", source)), tree_manifest(source))
