"""Prune's index on disk (`prune_index`): its join of packs and live ids must count what the
in-memory index did (the first pack named keeps a blob), whatever the chunking."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timevault.core.prune_index import SpilledIndex
from timevault.core.repository.format import BlobType, IndexPack, PackBlob
from timevault.core.repository.index import Index

# Few distinct leading bytes: groups hold several ids, and packs share ids.
ids = st.binary(min_size=32, max_size=32).map(lambda b: bytes([b[0] % 4 * 64]) + b[1:])
odd_ids = st.binary(max_size=40).filter(lambda b: len(b) != 32)  # only a damaged index has them


@st.composite
def blobs(draw: st.DrawFn, pool: list[bytes]) -> PackBlob:
    blob_id = draw(st.sampled_from(pool) | odd_ids) if pool else draw(ids)
    length = draw(st.integers(min_value=0, max_value=1 << 20))
    offset = draw(st.integers(min_value=0, max_value=1 << 33))  # past 4 GiB: kept beside the records
    return PackBlob(blob_id, draw(st.sampled_from(list(BlobType))), offset, length, length + 1, 0)


@st.composite
def indexes(draw: st.DrawFn) -> tuple[list[IndexPack], set[bytes]]:
    pool = draw(st.lists(ids, min_size=1, max_size=40, unique=True))
    packs = [
        IndexPack(f"{number:064x}", draw(st.integers(min_value=0, max_value=1 << 40)),
                  draw(st.lists(blobs(pool), max_size=30)), [b"k" * 8])
        for number in range(draw(st.integers(min_value=0, max_value=8)))
    ]
    live = set(draw(st.lists(st.sampled_from(pool), max_size=40))) | set(draw(st.lists(ids, max_size=5)))
    return packs, live


def _blocks(live: set[bytes], size: int) -> list[bytes]:
    ordered = sorted(live)
    return [b"".join(ordered[at : at + size]) for at in range(0, len(ordered), size)]


@settings(max_examples=200, deadline=None)
@given(indexes(), st.integers(min_value=1, max_value=50), st.integers(min_value=1, max_value=7))
def test_the_join_counts_what_the_index_in_memory_says(
    case: tuple[list[IndexPack], set[bytes]], chunk: int, block: int
) -> None:
    packs, live = case
    memory = Index()
    for pack in packs:
        memory.add_pack(pack)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("timevault.core.prune_index.PARTITION_CHUNK", chunk)  # many chunks
        spilled = SpilledIndex()
        try:
            for pack in packs:
                spilled.add_pack(pack)
            counts = spilled.count_live(_blocks(live, block))
            assert [pack.id for pack in counts.packs] == list(memory.packs)
            keeper: dict[bytes, tuple[str, int]] = {}  # the first place (in index order) naming an id
            for pack_id in memory.packs:
                for position, b in enumerate(memory.packs[pack_id].blobs):
                    keeper.setdefault(b.id, (pack_id, position))
            for number, pack_id in enumerate(memory.packs):
                pack = memory.packs[pack_id]
                assert spilled.entry(pack_id) == pack  # read back as given
                owned = [
                    b.id in live and keeper[b.id] == (pack_id, position) and memory.blobs[b.id].pack == pack_id
                    for position, b in enumerate(pack.blobs)
                ]
                assert counts.size[number] == sum(b.length for b in pack.blobs)
                assert counts.live[number] == sum(b.length for b in pack.blobs if b.id in live)
                assert counts.dead[number] == sum(1 for b in pack.blobs if b.id not in live)
                assert list(counts.keep[number]) == [int(flag) for flag in owned]
                assert counts.owned_live[number] == sum(b.length for b, flag in zip(pack.blobs, owned, strict=True) if flag)
                assert counts.spare[number] == (not all(owned))
            assert counts.missing == {blob_id for blob_id in live if blob_id not in memory}
        finally:
            spilled.close()


def test_a_pack_named_again_keeps_its_first_entry() -> None:
    first = IndexPack("a" * 64, 10, [PackBlob(b"1" * 32, BlobType.DATA, 0, 10, 10, 0)], [b"k"])
    again = IndexPack("a" * 64, 20, [], [b"k"])
    spilled = SpilledIndex()
    try:
        spilled.add_pack(first)
        spilled.add_pack(again)
        assert len(spilled) == 1 and spilled.entry("a" * 64) == first
        kept = spilled.packs["a" * 64]
        spilled.clear()  # a new index of packs already spilled (prune's view after its mark)
        assert "a" * 64 not in spilled
        spilled.add(kept)
        assert spilled.entry(kept) == first
    finally:
        spilled.close()
