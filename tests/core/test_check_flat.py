"""`check` with memory flat in the number of files: ids compared in parts on disk (`idparts`),
lists of references streamed, trees walked once into a file; and the errors it always gave."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timevault.core import crypto
from timevault.core.archiver import backup
from timevault.core.checker import check
from timevault.core.errors import RepositoryError
from timevault.core.repository import idparts
from timevault.core.repository import repo as repo_module
from timevault.core.repository.format import Node, References
from timevault.core.repository.idparts import PartitionedIds, bits_for, bucket_range, part_of
from timevault.core.repository.references import SortedPieces
from timevault.core.repository.repo import Repository

from .conftest import SnapshotWriter, build_tree, random_bytes, reopen

# Few distinct leading bytes: parts are uneven, some empty, some crowded.
ids = st.binary(min_size=32, max_size=32).map(lambda b: bytes([b[0] % 5 * 50, b[1] % 3 * 90]) + b[2:])
id_lists = st.lists(ids, max_size=300)


@settings(max_examples=150, deadline=None)
@given(id_lists, st.integers(min_value=0, max_value=12), st.integers(min_value=1, max_value=40), st.data())
def test_parts_give_back_every_id_in_its_own_part(
    added: list[bytes], bits: int, buffer_ids: int, data: st.DataObject
) -> None:
    """Whatever the order, the repeats and the spills: part p holds exactly the ids whose
    leading bits are p, each once; sorted input split by bisection lands where unsorted does."""
    cut = data.draw(st.integers(min_value=0, max_value=len(added)))
    with PartitionedIds(bits, buffer_ids=buffer_ids) as unsorted, PartitionedIds(bits, buffer_ids=buffer_ids) as by_runs:
        unsorted.add_packed(b"".join(added[:cut]))
        unsorted.add_packed(b"".join(added[cut:]))
        by_runs.add_sorted(sorted(added[:cut]))  # two sorted runs, one after the other
        by_runs.add_sorted(sorted(added[cut:]))
        seen: set[bytes] = set()
        for part in range(1 << bits):
            expected = {blob_id for blob_id in added if part_of(blob_id, bits) == part}
            assert unsorted.ids(part) == expected
            assert by_runs.ids(part) == expected
            first, end = bucket_range(part, bits)
            assert all(first <= (blob_id[0] << 8 | blob_id[1]) < end for blob_id in expected)
            seen |= expected
        assert seen == set(added)


def test_parts_refuse_what_is_no_id() -> None:
    with PartitionedIds(3) as parts:
        with pytest.raises(ValueError):
            parts.add_packed(b"x" * 33)
        with pytest.raises(ValueError):
            parts.add_sorted([b"x" * 31])
        with pytest.raises(ValueError):
            PartitionedIds(17)


def test_parts_stay_near_their_size_whatever_the_count() -> None:
    assert bits_for(0) == 0 and bits_for(idparts.PART_IDS) == 0
    for count in (10**5, 10**6, 10**7):
        bits = bits_for(count)
        assert idparts.PART_IDS // 2 < count / (1 << bits) <= idparts.PART_IDS
    assert bits_for(10**12) == idparts.MAX_BITS


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(ids, max_size=20), max_size=6))
def test_sorted_pieces_notice_disorder_across_pieces(pieces: list[list[bytes]]) -> None:
    order = SortedPieces()
    for piece in pieces:
        assert order.split(b"".join(piece)) == piece
    flat = [blob_id for piece in pieces for blob_id in piece]
    assert order.unsorted == (flat != sorted(flat))


# --- lists of references, streamed --------------------------------------------------------------


async def _streamed(repo: Repository, references_id: str) -> set[bytes]:
    """What `stream_reference_ids` hands over, made the set it describes."""
    got: dict[str, set[bytes]] = {"base": set(), "added": set(), "removed": set()}

    def sink(kind: str, ids: list[bytes]) -> None:
        if kind == "restart":
            for ids_of_kind in got.values():
                ids_of_kind.clear()
        else:
            got[kind].update(ids)

    await repo.stream_reference_ids(references_id, sink)
    return (got["base"] - got["removed"]) | got["added"]


@pytest.mark.parametrize("small", [1 << 20, 0], ids=["read-whole", "streamed"])
async def test_streamed_lists_are_the_lists(
    small_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small: int
) -> None:
    """A full list and a delta on it (streamed, or read whole when small) give the ids that
    `reference_ids` gives; a delta read as a stream first starts over."""
    repo = small_repo
    source = build_tree(tmp_path / "src", {f"f{i}.bin": random_bytes(20_000, i) for i in range(80)})
    first, _ = await backup(repo, [str(source)])
    (source / "f3.bin").write_bytes(random_bytes(20_000, 99))
    second, snapshot = await backup(repo, [str(source)])
    monkeypatch.setattr(repo_module, "_SMALL_REFERENCES", small)
    assert snapshot.references and await repo.references_base(snapshot.references) is not None  # a delta
    for snapshot_id in (first, second):
        references_id = (await repo.load_snapshot(snapshot_id)).references
        assert await _streamed(repo, references_id) == set(await repo.snapshot_reference_ids(snapshot_id))


@pytest.mark.parametrize("small", [1 << 20, 0], ids=["read-whole", "streamed"])
async def test_a_streamed_list_out_of_order_is_damage(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small: int
) -> None:
    monkeypatch.setattr(repo_module, "_SMALL_REFERENCES", small)
    listed = sorted(os.urandom(32) for _ in range(50))
    data = repo.encrypt_meta(msgspec.msgpack.encode(References(added=b"".join(reversed(listed)))), b"references")
    references_id = crypto.content_hash(data).hex()
    await repo.storage.put(f"references/{references_id}", data)
    with pytest.raises(RepositoryError, match="damaged"):
        await _streamed(repo, references_id)
    # Changed as well: the change is found, not the order (nothing unauthenticated is believed).
    (Path(repo.storage.location) / "references" / references_id).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(RepositoryError, match=r"damaged|does not match its name"):
        await _streamed(repo, references_id)


# --- check --------------------------------------------------------------------------------------


@pytest.mark.parametrize("part_ids", [1 << 14, 2], ids=["one-part", "many-parts"])
async def test_a_whole_repository_checks_clean_in_any_number_of_parts(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, part_ids: int
) -> None:
    monkeypatch.setattr(idparts, "PART_IDS", part_ids)
    source = build_tree(tmp_path / "src", {f"d{i}/f{j}": random_bytes(2000, i * 10 + j) for i in range(4) for j in range(6)})
    await backup(repo, [str(source)])
    (source / "d1" / "f2").write_bytes(b"changed")
    await backup(repo, [str(source)])
    result = await check(await reopen(repo))
    assert result.errors == [], result.errors
    index = await (await reopen(repo)).index()
    assert result.blobs == len(index.blobs) and result.packs == len(index.packs)
    assert result.snapshots == 2 and result.trees_read > 0


@pytest.mark.parametrize("part_ids", [1 << 14, 2], ids=["one-part", "many-parts"])
async def test_missing_data_blobs_are_reported_where_files_use_them(
    repo: Repository, monkeypatch: pytest.MonkeyPatch, part_ids: int
) -> None:
    """A file naming a blob no pack holds: reported at its path (once, though two snapshots
    share the tree), and the lists of references that omit it do not match the trees."""
    monkeypatch.setattr(idparts, "PART_IDS", part_ids)
    w = SnapshotWriter(repo)
    ghost, short = os.urandom(32), os.urandom(7)
    broken = Node(name=b"broken", type="file", mode=0o644, mtime_ns=10**18, size=2, content=[ghost, short])
    nodes = [await w.dir(b"d", [await w.file(b"fine", b"y" * 100), broken])]
    first = await w.commit(nodes)
    second = await w.commit(nodes)
    result = await check(await reopen(repo))
    where = [e for e in result.errors if "data blob" in e]
    assert sorted(where) == sorted([
        f"snapshot {first[:8]}:/d/broken: data blob {ghost.hex()[:16]} is missing",
        f"snapshot {first[:8]}:/d/broken: data blob {short.hex()[:16]} is missing",
    ]), result.errors
    for snapshot_id in (first, second):
        assert any(
            snapshot_id[:8] in e and "(1 needed blob(s) not listed, 0 listed blob(s) not needed)" in e
            for e in result.errors
        ), result.errors


async def test_listed_blobs_missing_from_the_index_and_a_missing_root(repo: Repository) -> None:
    """The write tier's list names a blob no pack holds and leaves out the root tree."""
    w = SnapshotWriter(repo)
    snapshot_id = await w.commit([await w.file(b"a", b"data")])
    snapshot = await repo.load_snapshot(snapshot_id)
    ghosts = sorted(os.urandom(32) for _ in range(3))
    listed = (set(await repo.snapshot_references(snapshot_id)) - {snapshot.tree}) | set(ghosts)
    lying = msgspec.structs.replace(snapshot, references=await repo.save_references(listed))
    lying_id = await repo.save_snapshot(lying)
    result = await check(await reopen(repo))
    mine = [e for e in result.errors if lying_id[:8] in e]
    assert f"snapshot {lying_id[:8]}: 3 referenced blob(s) are missing from the index, first {ghosts[0].hex()[:16]}" in mine
    assert f"snapshot {lying_id[:8]}: its list of references lacks its root tree" in mine
    assert any("(1 needed blob(s) not listed, 3 listed blob(s) not needed)" in e for e in mine), mine
    assert not any(snapshot_id[:8] in e for e in result.errors)
