"""On-storage formats: key files, config, blobs, packs, index files, trees."""

from __future__ import annotations

import random
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timevault.core import crypto
from timevault.core.buffers import BytesLike
from timevault.core.errors import DamagedData
from timevault.core.repository import blobs, keys
from timevault.core.repository.blobs import CorruptBlob
from timevault.core.repository.format import BlobType, IndexPack, KeyFile, Node, PackBlob, PackHeader, Tree
from timevault.core.repository.index import CorruptIndex, Index, decode_index_file, write_index_file
from timevault.core.repository.pack import CorruptPack, Packer, build_pack, read_pack_header
from timevault.core.repository.repo import Repository
from timevault.core.storage import LocalStorage

from .conftest import FAST_KDF, PASSWORD

SETTINGS = settings(max_examples=30, deadline=None)
PRIVATE, PUBLIC = crypto.new_keypair()
ID_KEY = b"\x01" * 32
META_KEY = b"\x02" * 32


# --- key files ------------------------------------------------------------------------------


def _master() -> keys.MasterKeys:
    return keys.new_master_keys("0123456789abcdef")


def test_key_file_round_trip() -> None:
    master = _master()
    data = keys.wrap_keys(master, PASSWORD, FAST_KDF)
    key_file = msgspec.json.decode(data, type=KeyFile)
    assert key_file.kdf.name == "argon2id" and key_file.kdf.memory_kib == FAST_KDF.memory_kib
    assert key_file.kdf.time_cost == FAST_KDF.time_cost and len(key_file.kdf.salt) == 32
    assert master.private_key not in data and master.write.id_key not in data and master.sign_key not in data
    assert keys.unwrap_keys(data, PASSWORD) == master
    # A fresh salt each time: the same keys and password never give the same file.
    assert keys.wrap_keys(master, PASSWORD, FAST_KDF) != data


def test_master_keys_are_fresh_and_well_formed() -> None:
    a, b = _master(), _master()
    assert a.private_key != b.private_key and a.write.id_key != b.write.id_key
    assert crypto.public_key_of(a.private_key) == a.write.public_key
    assert len(a.write.meta_key) == 32 and a.write.chunker_seed > 0
    assert crypto.verifying_key_of(a.sign_key) == a.write.verify_key != b.write.verify_key


def test_default_key_files_use_memory_hard_parameters() -> None:
    key_file = msgspec.json.decode(keys.wrap_keys(_master(), PASSWORD), type=KeyFile)
    assert key_file.kdf.name == "argon2id"
    assert key_file.kdf.memory_kib >= 64 * 1024 and key_file.kdf.time_cost >= 3


@pytest.mark.parametrize(
    "wrong", ["correct horse battery stapl", "Correct horse battery staple", "xxxx", "ünïcödé"]
)
def test_wrong_password(wrong: str) -> None:
    data = keys.wrap_keys(_master(), PASSWORD, FAST_KDF)
    with pytest.raises(keys.WrongPassword):
        keys.unwrap_keys(data, wrong)


def test_weak_password_refused_when_wrapping() -> None:
    with pytest.raises(keys.WeakPassword):
        keys.wrap_keys(_master(), "abc", FAST_KDF)
    keys.check_password("abcd")


def _with_kdf(data: bytes, **changes: object) -> bytes:
    raw = msgspec.json.decode(data)
    raw["kdf"].update(changes)
    return msgspec.json.encode(raw)


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "scrypt"},
        {"name": "argon2i"},
        {"memory_kib": 2**30},  # 1 TiB
        {"memory_kib": 2 * 1024 * 1024},  # 2 GiB: over the bound
        {"memory_kib": 1024 * 1024, "time_cost": 10},  # within each bound, too much work together
        {"time_cost": 100},
        {"time_cost": 0},
        {"time_cost": -3},
        {"memory_kib": 0},
        {"memory_kib": 7},  # less than argon2's minimum of 8 KiB per lane
        {"parallelism": 0},
        {"parallelism": 10**9},
        {"parallelism": 64, "memory_kib": 4096},
        {"salt": ""},
        {"salt": "AAAA"},  # 3 bytes
    ],
    ids=repr,
)
def test_hostile_kdf_params_rejected_quickly(changes: dict[str, object]) -> None:
    data = _with_kdf(keys.wrap_keys(_master(), PASSWORD, FAST_KDF), **changes)
    started = time.monotonic()
    with pytest.raises(keys.WrongPassword, match="unsupported"):
        keys.unwrap_keys(data, PASSWORD)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("garbage", [b"", b"{}", b"not json", b'{"version": 1}', b"\xff" * 100])
def test_damaged_key_file_is_wrong_password(garbage: bytes) -> None:
    with pytest.raises(keys.WrongPassword):
        keys.unwrap_keys(garbage, PASSWORD)


async def test_hostile_key_file_does_not_block_the_good_one(tmp_path: Path) -> None:
    """Opening tries every key file; one with unusable parameters must be skipped, not crash."""
    repo = await Repository.init(LocalStorage(tmp_path), PASSWORD, kdf=FAST_KDF)
    good = next((tmp_path / "keys").iterdir()).read_bytes()
    hostile: list[dict[str, object]] = [{"time_cost": 0}, {"memory_kib": 2**40}, {"name": "bogus"}]
    for i, changes in enumerate(hostile):
        # Names sort before the good key, so they are tried first.
        (tmp_path / "keys" / f"0000{i}").write_bytes(_with_kdf(good, **changes))
    reopened = await Repository.open(LocalStorage(tmp_path), PASSWORD)
    assert reopened.write_keys == repo.write_keys
    with pytest.raises(keys.WrongPassword):
        await Repository.open(LocalStorage(tmp_path), "not the password")


def test_write_keys_encoding() -> None:
    write = _master().write
    assert keys.decode_write_keys(keys.encode_write_keys(write)) == write
    with pytest.raises(DamagedData):
        keys.decode_write_keys(b"\x00garbage")


# --- blobs -------------------------------------------------------------------------------------


def _encode(data: bytes, blob_type: BlobType = BlobType.DATA) -> blobs.EncodedBlob:
    session = crypto.SealingSession(PUBLIC)
    return blobs.encode(session, crypto.blob_id(ID_KEY, data), blob_type, data)


def _decode(
    blob: blobs.EncodedBlob, payload: BytesLike | None = None, blob_type: BlobType | None = None
) -> bytes:
    return bytes(
        blobs.decode(
            crypto.Unsealer(PRIVATE),
            ID_KEY,
            blob.id,
            blob.type if blob_type is None else blob_type,
            bytes(blob.payload) if payload is None else payload,
            blob.sealed_key,
        )
    )


@SETTINGS
@given(
    data=st.one_of(
        st.binary(max_size=20_000),
        st.builds(lambda unit, n: unit * n, st.binary(min_size=1, max_size=20), st.integers(0, 2000)),
    ),
    blob_type=st.sampled_from(list(BlobType)),
)
def test_blob_round_trip(data: bytes, blob_type: BlobType) -> None:
    blob = _encode(data, blob_type)
    assert blob.raw_length == len(data) and blob.type == blob_type
    assert _decode(blob) == data
    # Stored lengths are Padmé lengths, and nothing of the sealed key is in the payload.
    assert crypto.padme(len(blob.payload)) == len(blob.payload)
    assert blob.sealed_key[:16] not in blob.payload


def test_compressible_blobs_shrink_and_random_ones_are_stored_raw() -> None:
    text = b"the same line again and again\n" * 10_000
    noise = random.Random(1).randbytes(300_000)
    small = _encode(text)
    raw = _encode(noise)
    assert len(small.payload) < len(text) // 10
    assert len(raw.payload) == crypto.padme(len(noise) + blobs.BLOB_OVERHEAD)  # raw, padded, not expanded
    assert len(raw.payload) <= len(noise) * 1.03
    assert _decode(small) == text and _decode(raw) == noise


@SETTINGS
@given(
    data=st.binary(min_size=0, max_size=3000), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7)
)
def test_tampered_blob_is_corrupt(data: bytes, where: float, bit: int) -> None:
    blob = _encode(data)
    payload = bytearray(blob.payload)
    payload[int(where * len(payload))] ^= 1 << bit
    with pytest.raises(CorruptBlob):
        _decode(blob, bytes(payload))


def test_blob_truncated_wrong_type_wrong_id_wrong_key() -> None:
    blob = _encode(b"some data " * 100)
    for cut in (0, 1, len(blob.payload) // 2, len(blob.payload) - 1):
        with pytest.raises(CorruptBlob):
            _decode(blob, bytes(blob.payload[:cut]))
    with pytest.raises(CorruptBlob):
        _decode(blob, blob_type=BlobType.TREE)
    unsealer = crypto.Unsealer(PRIVATE)
    with pytest.raises(CorruptBlob, match="does not match its id"):
        blobs.decode(unsealer, ID_KEY, b"\x00" * 32, blob.type, bytes(blob.payload), blob.sealed_key)
    with pytest.raises(CorruptBlob, match="does not match its id"):
        blobs.decode(unsealer, b"\x09" * 32, blob.id, blob.type, bytes(blob.payload), blob.sealed_key)
    other_private, _ = crypto.new_keypair()
    with pytest.raises(CorruptBlob):
        blobs.decode(crypto.Unsealer(other_private), ID_KEY, blob.id, blob.type, bytes(blob.payload), blob.sealed_key)
    other_session = crypto.SealingSession(PUBLIC)
    with pytest.raises(CorruptBlob):
        blobs.decode(unsealer, ID_KEY, blob.id, blob.type, bytes(blob.payload), other_session.sealed)


def test_blob_with_bad_inner_encoding_is_corrupt() -> None:
    """A payload that authenticates but has an unknown encoding, a broken zstd frame, or a body
    length beyond its end."""
    session = crypto.SealingSession(PUBLIC)
    blob_id = crypto.blob_id(ID_KEY, b"x")
    for header, body, message in [
        (bytes((7,)) + (1).to_bytes(4, "little"), b"x", "unknown encoding"),
        (bytes((1,)) + (8).to_bytes(4, "little"), b"not zstd", "does not decompress"),
        (bytes((0,)) + (10**6).to_bytes(4, "little"), b"x", "longer than itself"),
    ]:
        payload = bytearray(crypto.padme(blobs.BLOB_OVERHEAD + len(body)))
        crypto.encrypt_padded_into(session.data_key, bytes((BlobType.DATA,)), header, body, memoryview(payload))
        with pytest.raises(CorruptBlob, match=message):
            blobs.decode(crypto.Unsealer(PRIVATE), ID_KEY, blob_id, BlobType.DATA, bytes(payload), session.sealed)


# --- packs -------------------------------------------------------------------------------------


@SETTINGS
@given(contents=st.lists(st.binary(max_size=2000), max_size=12, unique=True), jobs=st.integers(1, 3))
def test_pack_round_trip(contents: list[bytes], jobs: int) -> None:
    sessions = [crypto.SealingSession(PUBLIC) for _ in range(jobs)]
    encoded = [
        blobs.encode(
            sessions[i % jobs], crypto.blob_id(ID_KEY, data), BlobType.TREE if i % 3 == 0 else BlobType.DATA, data
        )
        for i, data in enumerate(contents)
    ]
    pack_id, data, entry = build_pack(META_KEY, encoded)
    assert pack_id == crypto.content_hash(data).hex()
    assert entry.id == pack_id and entry.size == len(data)
    assert data.endswith(b"TVP2")
    header = read_pack_header(META_KEY, data)
    assert header.blobs == entry.blobs and header.keys == entry.keys
    # Each job's sealed key once in the (encrypted) header, never in the pack's clear bytes.
    assert sorted(header.keys) == sorted({b.sealed_key for b in encoded})
    for session in sessions:
        assert session.sealed[:16] not in data
    assert [b.id for b in header.blobs] == [b.id for b in encoded]
    for blob, location in zip(encoded, header.blobs, strict=True):
        assert location.type == blob.type and location.raw_length == blob.raw_length
        assert header.keys[location.key] == blob.sealed_key
        payload = data[location.offset : location.offset + location.length]
        assert payload == blob.payload
        assert _decode(blob, payload) == contents[encoded.index(blob)]


async def test_tree_packs_are_sealed_smaller_than_data_packs(tmp_path: Path) -> None:
    """Trees and data go to packs of their own; a tree pack is sealed at `tree_pack_size`, a data
    pack at `pack_size` (an open pack is held in memory until it is written)."""
    storage = LocalStorage(tmp_path)
    packer = Packer(storage, META_KEY, pack_size=40_000, tree_pack_size=10_000)
    rng = random.Random(5)
    added: dict[bytes, BlobType] = {}
    for i in range(120):
        blob_type = BlobType.TREE if i % 2 else BlobType.DATA
        blob = _encode(rng.randbytes(1000 + i), blob_type)  # random: stored as it is, ~1 KB
        added[blob.id] = blob_type
        await packer.add(blob)
    await packer.flush()
    index = await Index.load(storage, META_KEY)
    sizes: dict[BlobType, list[int]] = {BlobType.DATA: [], BlobType.TREE: []}
    for pack_id in index.packs:
        entry = index.packs[pack_id]
        types = {stored.type for stored in entry.blobs}
        assert len(types) == 1  # never mixed
        sizes[types.pop()].append(sum(stored.length for stored in entry.blobs))
        for stored in entry.blobs:
            assert added.pop(stored.id) == stored.type
    assert added == {}  # every blob in exactly one pack
    # Sealed when the next blob reaches the limit: at most one blob (~1.2 KB stored) over it.
    assert len(sizes[BlobType.TREE]) >= 5 and max(sizes[BlobType.TREE]) < 10_000 + 1500
    assert len(sizes[BlobType.DATA]) == 2 and max(sizes[BlobType.DATA]) >= 40_000


def test_damaged_pack_headers_are_rejected() -> None:
    _, data, _ = build_pack(META_KEY, [_encode(b"hello"), _encode(b"world")])
    damaged = [
        data[:-1],
        data[:3],
        b"",
        data[:-4] + b"XXXX",  # magic
        data[:-4] + b"TVP1",  # a format 1 pack
        data[:-8] + (len(data)).to_bytes(4, "little") + b"TVP2",  # header longer than the pack
        data[:-10] + bytes([data[-10] ^ 1]) + data[-9:],  # inside the header ciphertext
    ]
    for bad in damaged:
        with pytest.raises(CorruptPack):
            read_pack_header(META_KEY, bad)
    with pytest.raises(CorruptPack):
        read_pack_header(b"\x03" * 32, data)


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=600), trailer=st.booleans())
def test_pack_header_parse_of_random_bytes_never_crashes(garbage: bytes, trailer: bool) -> None:
    """Random bytes (with or without a plausible trailer) are a CorruptPack, never another error."""
    data = garbage + (len(garbage).to_bytes(4, "little") + b"TVP2" if trailer else b"")
    with pytest.raises(CorruptPack):
        read_pack_header(META_KEY, data)


@SETTINGS
@given(plaintext=st.binary(max_size=400))
def test_authentic_but_malformed_pack_headers_are_rejected(plaintext: bytes) -> None:
    """Even a header that authenticates (written by a key holder) must decode and stay in range."""
    body = crypto.encrypt(META_KEY, len(plaintext).to_bytes(4, "little") + plaintext, b"pack")
    data = body + len(body).to_bytes(4, "little") + b"TVP2"
    with pytest.raises(CorruptPack):
        read_pack_header(META_KEY, data)
    keys_missing = msgspec.msgpack.encode(PackHeader([], [PackBlob(b"x" * 32, BlobType.DATA, 0, 10, 10, 3)]))
    body = crypto.encrypt(META_KEY, len(keys_missing).to_bytes(4, "little") + keys_missing, b"pack")
    with pytest.raises(CorruptPack):
        read_pack_header(META_KEY, b"\0" * 10 + body + len(body).to_bytes(4, "little") + b"TVP2")


# --- index files -------------------------------------------------------------------------------


def _index_pack(n: int, seed: int) -> IndexPack:
    rng = random.Random(seed)
    blobs_ = [
        PackBlob(rng.randbytes(32), BlobType(i % 2), i * 100, 100, rng.randrange(1000)) for i in range(n)
    ]
    return IndexPack(rng.randbytes(32).hex(), n * 100 + 50, blobs_)


async def test_index_file_round_trip_and_supersedes(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    first, second, third = _index_pack(5, 1), _index_pack(3, 2), _index_pack(0, 3)
    old = await write_index_file(storage, META_KEY, [first])
    raw = (tmp_path / "index" / old).read_bytes()
    assert decode_index_file(META_KEY, raw).packs == [first]
    new = await write_index_file(storage, META_KEY, [second, third], supersedes=[old])
    index = await Index.load(storage, META_KEY)
    assert index.files == {new}
    assert set(index.packs) == {second.id, third.id}
    assert set(index.blobs) == {b.id for b in second.blobs}
    location = index.blobs[second.blobs[1].id]
    assert (location.pack, location.offset, location.length) == (second.id, 100, 100)
    assert index.stored_size() == second.size + third.size
    # Without the superseding file, the old one counts again.
    (tmp_path / "index" / new).unlink()
    index = await Index.load(storage, META_KEY)
    assert set(index.packs) == {first.id}


async def test_damaged_index_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    good = await write_index_file(storage, META_KEY, [_index_pack(2, 1)])
    await storage.put("index/" + "ab" * 32, b"garbage that is long enough to be a ciphertext")
    with pytest.raises(CorruptIndex):
        await Index.load(storage, META_KEY)
    errors: list[str] = []
    index = await Index.load(storage, META_KEY, errors)
    assert len(errors) == 1 and "abab" in errors[0]
    assert index.files == {good} and len(index.blobs) == 2
    with pytest.raises(CorruptIndex):
        decode_index_file(b"\x05" * 32, (tmp_path / "index" / good).read_bytes())


# --- trees --------------------------------------------------------------------------------------

names = st.binary(min_size=1, max_size=40).filter(lambda n: b"/" not in n and n not in (b".", b".."))


@SETTINGS
@given(
    nodes=st.lists(
        st.builds(
            Node,
            name=names,
            type=st.sampled_from(["file", "dir", "symlink"]),
            mode=st.integers(0, 0o7777),
            mtime_ns=st.integers(-(2**62), 2**62),
            size=st.integers(0, 2**50),
            content=st.lists(st.binary(min_size=32, max_size=32), max_size=3),
            subtree=st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
            target=st.one_of(st.none(), st.binary(max_size=50)),
            changed_while_reading=st.booleans(),
        ),
        max_size=8,
    )
)
def test_tree_round_trip_with_raw_names(nodes: list[Node]) -> None:
    tree = Tree(nodes)
    data = msgspec.msgpack.encode(tree)
    decoded = msgspec.msgpack.decode(data, type=Tree)
    assert decoded == tree
    assert [n.name for n in decoded.nodes] == [n.name for n in nodes]


def test_non_utf8_names_survive() -> None:
    node = Node(name=b"\xff\xfe caf\xe9", type="symlink", mode=0o777, mtime_ns=1, target=b"\x80/../x")
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(Tree([node])), type=Tree)
    assert decoded.nodes[0].name == b"\xff\xfe caf\xe9" and decoded.nodes[0].target == b"\x80/../x"
