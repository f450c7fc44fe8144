"""Sets of ids kept on disk (`idruns`) and lists of references written and read as streams:
what keeps a backup's memory flat in the number of files."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timevault.core import crypto
from timevault.core.archiver import backup
from timevault.core.repository import references
from timevault.core.repository.compact import IdSet
from timevault.core.repository.format import BlobType, IndexPack, PackBlob, References
from timevault.core.repository.idruns import DiskIdSet, IdRuns
from timevault.core.repository.index import Index, write_index_file
from timevault.core.repository.repo import Repository

from .conftest import build_tree, new_repo

# Few distinct leading bytes: buckets hold several ids, ids share prefixes and runs overlap.
ids = st.binary(min_size=32, max_size=32).map(lambda b: bytes([b[0] % 3, b[1] % 2]) + b[2:])
id_lists = st.lists(ids, max_size=300)


@settings(max_examples=150, deadline=None)
@given(id_lists, st.integers(min_value=1, max_value=40), st.sampled_from([1, 2, 5, 2048]))
def test_idruns_give_back_every_id_once_in_order(added: list[bytes], buffer_ids: int, fanin: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("timevault.core.repository.idruns.MERGE_FANIN", max(2, fanin))
        patch.setattr("timevault.core.repository.idruns.BLOCK_IDS", 3)  # many merge steps
        with IdRuns(buffer_ids=buffer_ids) as runs:
            runs.update(added)
            assert runs.merged() == len(set(added))
            assert b"".join(runs.sorted_blocks(block_bytes=64)) == b"".join(sorted(set(added)))
            runs.update(added[:3])  # more after a merge: still one list
            assert b"".join(runs.sorted_blocks()) == b"".join(sorted(set(added)))


@settings(max_examples=150, deadline=None)
@given(id_lists, id_lists, st.integers(min_value=1, max_value=30), st.sampled_from([8, 64, 1 << 12]))
def test_disk_id_set_answers_as_a_set_does(
    added: list[bytes], probes: list[bytes], buffer_ids: int, filter_bits: int
) -> None:
    """A tiny filter makes nearly every probe a "maybe": the runs on disk must answer right."""
    reference: set[bytes] = set()
    with DiskIdSet(buffer_ids=buffer_ids, filter_bits=filter_bits) as on_disk:
        for blob_id in added:
            assert on_disk.add(blob_id) == (blob_id not in reference)
            reference.add(blob_id)
        assert len(on_disk) == len(reference)
        for blob_id in added + probes:
            assert (blob_id in on_disk) == (blob_id in reference)
        assert b"".join(on_disk.sorted_blocks()) == b"".join(sorted(reference))
        for blob_id in added + probes:  # lookups in the merged run, with its own bucket table
            assert (blob_id in on_disk) == (blob_id in reference)


@settings(max_examples=150, deadline=None)
@given(st.lists(id_lists, max_size=6), id_lists, id_lists, st.integers(min_value=1, max_value=30),
       st.sampled_from([8, 64, 1 << 12]))
def test_a_seeded_disk_id_set_answers_as_a_set_does(
    seeded: list[list[bytes]], added: list[bytes], probes: list[bytes], buffer_ids: int, filter_bits: int
) -> None:
    """Ids seeded in bulk (repeats across and within seeds allowed), then added one by one:
    `add` still says whether an id is new, membership and the merged output are a set's."""
    reference: set[bytes] = set()
    with DiskIdSet(buffer_ids=buffer_ids, filter_bits=filter_bits) as on_disk:
        for group in seeded:
            on_disk.seed(group)
            reference.update(group)
        for blob_id in added:
            assert on_disk.add(blob_id) == (blob_id not in reference)
            reference.add(blob_id)
        for blob_id in added + probes + [i for group in seeded for i in group]:
            assert (blob_id in on_disk) == (blob_id in reference)
        assert b"".join(on_disk.sorted_blocks()) == b"".join(sorted(reference))


@settings(max_examples=150, deadline=None)
@given(st.lists(id_lists, max_size=4), id_lists, id_lists, st.integers(min_value=1, max_value=30),
       st.sampled_from([8, 64, 1 << 12]))
def test_a_set_written_out_and_read_back_answers_as_before(
    seeded: list[list[bytes]], added: list[bytes], probes: list[bytes], buffer_ids: int, filter_bits: int
) -> None:
    """`write_to` then `read_from` (in pieces of any size): the same members, the same merged
    output, and ids added afterwards are told apart from those already in."""
    reference: set[bytes] = set()
    pieces: list[bytes] = []
    with DiskIdSet(buffer_ids=buffer_ids, filter_bits=filter_bits) as original:
        for group in seeded:
            original.seed(group)
            reference.update(group)
        for blob_id in added:
            original.add(blob_id)
            reference.add(blob_id)
        counts = original.write_to(lambda piece: pieces.append(bytes(piece)))
    body = b"".join(pieces)
    position = 0

    def read(n: int) -> bytes:
        nonlocal position
        position += n
        return body[position - n : position]

    with DiskIdSet.read_from(read, counts, buffer_ids=buffer_ids, filter_bits=filter_bits) as back:
        assert position == len(body)
        for blob_id in added + probes + [i for group in seeded for i in group]:
            assert (blob_id in back) == (blob_id in reference)
        for blob_id in probes:
            assert back.add(blob_id) == (blob_id not in reference)
            reference.add(blob_id)
        assert b"".join(back.sorted_blocks()) == b"".join(sorted(reference))


@pytest.mark.parametrize("damage", ["short", "filter size", "bucket table"])
def test_reading_back_what_does_not_fit_is_refused(damage: str) -> None:
    pieces: list[bytes] = []
    with DiskIdSet(filter_bits=64) as original:
        original.seed([os.urandom(32) for _ in range(50)])
        counts = original.write_to(lambda piece: pieces.append(bytes(piece)))
    body = bytearray(b"".join(pieces))
    filter_bits = 64
    if damage == "short":
        del body[-1]
    elif damage == "filter size":
        filter_bits = 128
    else:
        body[8 + 4 * 5] = 0xFF  # a bucket's start beyond the next ones
    stream = iter([bytes(body)])
    rest = bytearray()

    def read(n: int) -> bytes:
        if not rest:
            rest.extend(next(stream, b""))
        piece = bytes(rest[:n])
        del rest[:n]
        return piece

    with pytest.raises(ValueError):
        DiskIdSet.read_from(read, counts, filter_bits=filter_bits)


def test_seeding_refuses_an_id_of_another_length() -> None:
    with DiskIdSet() as on_disk, pytest.raises(ValueError, match="32 bytes"):
        on_disk.seed([b"a" * 32, b"b" * 31, b"c" * 33])


def test_an_id_spanning_two_ids_on_disk_is_not_found() -> None:
    first, second = bytes([0, 0]) + b"a" * 30, bytes([0, 0]) + b"b" * 30
    spanning = first[16:] + second[:16]
    with DiskIdSet(buffer_ids=1, filter_bits=8) as on_disk:
        on_disk.add(first)
        on_disk.add(second)
        assert spanning not in on_disk and on_disk.add(spanning)


def test_runs_live_in_an_unlinked_file_in_the_given_folder(tmp_path: Path) -> None:
    with IdRuns(str(tmp_path), buffer_ids=1) as runs:
        runs.update([os.urandom(32) for _ in range(10)])
        assert os.listdir(tmp_path) == []  # nothing to leave behind, even when killed
        assert runs.merged() == 10


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=70_000), st.binary(max_size=5))
def test_a_streamed_full_list_is_what_msgspec_encodes(count: int, seed: bytes) -> None:
    """The frame around a full list (bin8/16/32 by length) gives msgspec's exact bytes."""
    data = (seed * 32 or b"\x01" * 32)[:32] * count
    prefix, suffix = references.full_list_frame(count)
    assert prefix + data + suffix == msgspec.msgpack.encode(References(added=data))


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.none(), st.text(max_size=70)),
    st.lists(ids, max_size=40),
    st.lists(ids, max_size=10),
    st.lists(st.integers(min_value=1, max_value=50), max_size=10),
)
def test_the_parser_reads_any_references_in_any_pieces(
    base: str | None, added: list[bytes], removed: list[bytes], cuts: list[int]
) -> None:
    encoded = msgspec.msgpack.encode(References(base=base, added=b"".join(added), removed=b"".join(removed)))
    seen: list[bytes] = []
    lengths: list[int] = []
    parser = references.ReferencesParser(seen.append, lengths.append)
    at = 0
    for cut in cuts:
        parser.feed(encoded[at : at + cut])
        at += cut
    parser.feed(encoded[at:])
    fields = parser.finish()
    assert b"".join(seen) == b"".join(added) and lengths == [32 * len(added)]
    assert fields["base"] == base and fields["removed"] == b"".join(removed)


@pytest.mark.parametrize(
    "plaintext",
    [b"", b"\x90", b"\x81\xa5added\xc4\x05abcde", b"\x81\xa5added\xc4\x40" + b"x" * 32, b"\x83\xa4base"],
)
def test_the_parser_refuses_what_is_not_a_list(plaintext: bytes) -> None:
    parser = references.ReferencesParser(lambda piece: None)
    with pytest.raises(references.NotAList):
        parser.feed(plaintext)
        parser.finish()


@settings(max_examples=300, deadline=None)
@given(st.sets(ids, max_size=60), st.sets(ids, max_size=60), st.integers(min_value=1, max_value=7))
def test_the_streamed_delta_is_small_delta(base: set[bytes], new: set[bytes], block: int) -> None:
    """`DeltaMerge` (streamed) agrees with `small_delta` (in memory) on every pair of sets."""
    expected = references.small_delta(IdSet(new), b"".join(sorted(base)))
    ours = b"".join(sorted(new))
    blocks = iter([ours[i : i + 32 * block] for i in range(0, len(ours), 32 * block)])
    merge = references.DeltaMerge(blocks, len(base))
    listed = b"".join(sorted(base))
    for i in range(0, len(listed), 32 * (block + 1)):
        merge.feed(listed[i : i + 32 * (block + 1)])
    assert merge.finish() == expected


@settings(max_examples=200, deadline=None)
@given(
    st.sets(ids, min_size=1, max_size=400),
    st.data(),
    st.integers(min_value=1, max_value=70),
    st.integers(min_value=1, max_value=70),
)
def test_the_streamed_delta_of_a_few_changes_is_small_delta(
    base: set[bytes], data: st.DataObject, block: int, base_block: int
) -> None:
    """Long equal runs with a few differences, as between two snapshots of one tree (the
    merge gallops through the runs): still `small_delta`'s answer."""
    listed = sorted(base)
    removed = set(data.draw(st.lists(st.sampled_from(listed), max_size=max(1, len(listed) // 10))))
    added = data.draw(st.sets(ids, max_size=max(1, len(listed) // 10)))
    new = (base - removed) | added
    expected = references.small_delta(IdSet(new), b"".join(listed))
    ours = b"".join(sorted(new))
    merge = references.DeltaMerge(iter([ours[i : i + 32 * block] for i in range(0, len(ours), 32 * block)]), len(base))
    joined = b"".join(listed)
    for i in range(0, len(joined), 32 * base_block):
        merge.feed(joined[i : i + 32 * base_block])
    assert merge.finish() == expected


def test_an_unsorted_base_is_refused() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32
    merge = references.DeltaMerge(iter([a + b]), 8)
    with pytest.raises(references.NotAList):
        merge.feed(b + a)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=6), st.binary(max_size=8))
def test_encrypting_pieces_is_encrypting_their_join(pieces: list[bytes], aad: bytes) -> None:
    key = b"k" * 32
    out = bytearray(sum(map(len, pieces)) + crypto.AEAD_OVERHEAD)
    crypto.encrypt_pieces_into(key, aad, iter(pieces), memoryview(out))
    assert crypto.decrypt(key, bytes(out), aad) == b"".join(pieces)
    nonce, tag = bytes(out[: crypto.NONCE_SIZE]), bytes(out[-crypto.TAG_SIZE :])
    decryptor = crypto.StreamDecryptor(key, nonce, tag, aad)
    body = bytes(out[crypto.NONCE_SIZE : -crypto.TAG_SIZE])
    assert b"".join(decryptor.update(body[i : i + 7]) for i in range(0, len(body), 7)) == b"".join(pieces)
    decryptor.finish()
    if body:
        broken = StreamDecryptorCheck(key, nonce, tag, aad, body)
        with pytest.raises(crypto.Unauthenticated):
            broken.run()


class StreamDecryptorCheck:
    """One flipped bit anywhere fails `finish`."""

    def __init__(self, key: bytes, nonce: bytes, tag: bytes, aad: bytes, body: bytes) -> None:
        self.decryptor = crypto.StreamDecryptor(key, nonce, tag, aad)
        self.body = bytes([body[0] ^ 1]) + body[1:]

    def run(self) -> None:
        self.decryptor.update(self.body)
        self.decryptor.finish()


async def test_saved_references_round_trip_full_and_delta(repo: Repository, tmp_path: Path) -> None:
    """A large list (streamed past the small-list threshold) and a delta against it read back
    as the same sets; a delta is chosen when the change is small."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("timevault.core.repository.repo._SMALL_REFERENCES", 64)
        patch.setattr("timevault.core.repository.repo._STREAM_PIECE", 100)
        patch.setattr("timevault.core.repository.idruns.BUFFER_IDS", 7)
        first = {os.urandom(32) for _ in range(200)}
        full_id = await repo.save_references(first)
        assert await repo.references_base(full_id) is None
        assert await repo.references_of(full_id) == first
        second = set(list(first)[10:]) | {os.urandom(32) for _ in range(5)}
        delta_id = await repo.save_references(second, full_id)
        assert await repo.references_base(delta_id) == full_id
        assert await repo.references_of(delta_id) == second
        third = set(list(second)[3:]) | {os.urandom(32)}
        next_id = await repo.save_references(third, delta_id)  # near is a delta: built on its base
        assert await repo.references_base(next_id) == full_id
        assert await repo.references_of(next_id) == third
        unrelated = {os.urandom(32) for _ in range(50)}
        other_id = await repo.save_references(unrelated, full_id)
        assert await repo.references_base(other_id) is None  # too different: a full list
        assert await repo.references_of(other_id) == unrelated


async def test_a_damaged_base_list_gives_a_full_list(repo: Repository, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("timevault.core.repository.repo._SMALL_REFERENCES", 64)
        first = {os.urandom(32) for _ in range(100)}
        full_id = await repo.save_references(first)
        path = Path(repo.storage.location) / "references" / full_id
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        path.chmod(0o600)
        path.write_bytes(bytes(data))
        new_id = await repo.save_references(first | {os.urandom(32)}, full_id)
        assert await repo.references_base(new_id) is None


async def test_backups_dedup_against_stored_ids_on_disk(repo: Repository, tmp_path: Path) -> None:
    """With a files cache, an in-process backup deduplicates against the ids on disk: the same
    content backed up from another folder adds nothing; the snapshot's references are exact."""
    cache = str(tmp_path / "cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("timevault.core.repository.idruns.BUFFER_IDS", 3)
        patch.setattr("timevault.core.repository.idruns.FILTER_BITS", 8)  # every lookup a "maybe"
        spec = {f"d{i}/f{j}.txt": f"content {i} {j}" for i in range(4) for j in range(5)}
        first_src = build_tree(tmp_path / "a", spec)
        first_id, first = await backup(repo, [str(first_src)], cache_dir=cache)
        assert first.stats.added_blobs > 0
        second_src = build_tree(tmp_path / "b", {**spec, "new.txt": "only here"})
        second_id, second = await backup(repo, [str(second_src)], cache_dir=cache)
        index = await repo.index(reload=True)
        before = await repo.snapshot_references(first_id)
        after = await repo.snapshot_references(second_id)
        new_trees = [blob_id for blob_id in after - before if index.blobs[blob_id].type.name == "TREE"]
        data_added = second.stats.added_blobs - len(new_trees)
        assert data_added == 1  # only new.txt's content
        assert os.listdir(cache) == [f"{repo.config.id}.files"]  # spill files were unlinked


def _pack(pack_id: str, blob_ids: list[bytes]) -> IndexPack:
    return IndexPack(pack_id, 100, [PackBlob(b, BlobType.DATA, 0, 10, 10) for b in blob_ids])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(ids, max_size=12), min_size=1, max_size=5), st.data())
async def test_stored_ids_are_the_index_without_superseded_files(
    tmp_path_factory: pytest.TempPathFactory, files: list[list[bytes]], data: st.DataObject
) -> None:
    """Index files, some superseded by a later one (a compaction not finished deleting them):
    the ids on disk are exactly what the index (without locations) holds."""
    repo = await new_repo(tmp_path_factory.mktemp("repo"))
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("timevault.core.repository.idruns.BUFFER_IDS", 4)
            written: list[str] = []
            for number, blob_ids in enumerate(files):
                supersedes = data.draw(st.lists(st.sampled_from(written), unique=True)) if written else []
                written.append(
                    await write_index_file(
                        repo.storage, repo.write_keys.meta_key, [_pack(f"{number:064x}", blob_ids)], supersedes
                    )
                )
            expected = await Index.load(repo.storage, repo.write_keys.meta_key, locations=False)
            with await repo.stored_ids(str(tmp_path_factory.mktemp("spill"))) as stored:
                assert b"".join(stored.sorted_blocks()) == b"".join(sorted(expected.blobs))
                for blob_ids in files:
                    for blob_id in blob_ids:
                        assert (blob_id in stored) == (blob_id in expected)
    finally:
        await repo.close()


@settings(max_examples=150, deadline=None)
@given(st.lists(id_lists, max_size=5), id_lists, id_lists, st.integers(min_value=1, max_value=40))
def test_sorted_runs_join_what_ids_one_by_one_give(
    lists: list[list[bytes]], loose: list[bytes], leave_out: list[bytes], piece_ids: int
) -> None:
    """Sorted lists (repeats in them, streamed in pieces, some ids left out) are the same ids
    as given one by one; a run counts only once finished."""
    left_out = set(leave_out)
    with IdRuns(buffer_ids=7) as runs:
        runs.update(loose)
        for ids in lists:
            data = b"".join(sorted(ids))  # repeats kept: a damaged list may have them
            run = runs.sorted_run()
            for at in range(0, len(data), piece_ids * 32):
                run.add(data[at : at + piece_ids * 32], left_out)
            run.finish()
        abandoned = runs.sorted_run()  # streamed, then found damaged: never finished
        abandoned.add(b"".join(sorted(set(leave_out))))
        want = set(loose).union(*[set(ids) - left_out for ids in lists])
        assert b"".join(runs.sorted_blocks(block_bytes=64)) == b"".join(sorted(want))


@given(st.lists(ids, min_size=2, max_size=50, unique=True), st.integers(min_value=1, max_value=50))
def test_a_sorted_run_refuses_ids_out_of_order(unique: list[bytes], split: int) -> None:
    ordered = sorted(unique)
    split = split % (len(ordered) - 1) + 1
    with IdRuns() as runs:
        run = runs.sorted_run()
        run.add(b"".join(ordered[split:]))
        with pytest.raises(ValueError, match="not sorted"):  # a piece behind the one before
            run.add(b"".join(ordered[:split]))
        with pytest.raises(ValueError, match="not sorted"):
            runs.sorted_run().add(b"".join(reversed(ordered)))


def test_a_set_that_answers_lookups_takes_no_sorted_run() -> None:
    with DiskIdSet(filter_bits=64) as on_disk, pytest.raises(TypeError):
        on_disk.sorted_run()
