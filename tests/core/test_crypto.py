"""AEAD, padding, keyed ids, X25519 sealing and Ed25519 signatures: round trips, tamper detection,
key separation."""

from __future__ import annotations

import concurrent.futures
import os
import secrets

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timevault.core import crypto
from timevault.core.crypto import Unauthenticated

SETTINGS = settings(max_examples=40, deadline=None)
KEY = b"\x11" * crypto.KEY_SIZE
OTHER_KEY = b"\x22" * crypto.KEY_SIZE
PRIVATE, PUBLIC = crypto.new_keypair()


@SETTINGS
@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=16))
def test_encrypt_round_trip(plaintext: bytes, aad: bytes) -> None:
    message = crypto.encrypt(KEY, plaintext, aad)
    assert len(message) == len(plaintext) + crypto.AEAD_OVERHEAD
    if len(plaintext) >= 16:
        assert plaintext not in message
    assert crypto.decrypt(KEY, message, aad) == plaintext
    assert crypto.decrypt(KEY, memoryview(message), aad) == plaintext


@SETTINGS
@given(plaintext=st.binary(max_size=512), data=st.data())
def test_any_bit_flip_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    message = bytearray(crypto.encrypt(KEY, plaintext, b"aad"))
    bit = data.draw(st.integers(0, len(message) * 8 - 1))
    message[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(Unauthenticated):
        crypto.decrypt(KEY, bytes(message), b"aad")


@SETTINGS
@given(plaintext=st.binary(max_size=512), data=st.data())
def test_truncation_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    message = crypto.encrypt(KEY, plaintext)
    cut = data.draw(st.integers(0, len(message) - 1))
    with pytest.raises(Unauthenticated):
        crypto.decrypt(KEY, message[:cut])
    with pytest.raises(Unauthenticated):
        crypto.decrypt(KEY, message[len(message) - cut :] if cut else b"")


@SETTINGS
@given(plaintext=st.binary(max_size=256))
def test_wrong_key_or_aad_fails(plaintext: bytes) -> None:
    message = crypto.encrypt(KEY, plaintext, b"index")
    with pytest.raises(Unauthenticated):
        crypto.decrypt(OTHER_KEY, message, b"index")
    with pytest.raises(Unauthenticated):
        crypto.decrypt(KEY, message, b"snapshot")
    with pytest.raises(Unauthenticated):
        crypto.decrypt(KEY, message)


def test_nonces_are_unique() -> None:
    nonces = {crypto.encrypt(KEY, b"same plaintext")[: crypto.NONCE_SIZE] for _ in range(4000)}
    assert len(nonces) == 4000
    padded = set()
    for _ in range(1000):
        out = bytearray(64)
        crypto.encrypt_padded_into(KEY, b"", b"h", b"x", memoryview(out))
        padded.add(bytes(out[: crypto.NONCE_SIZE]))
    assert len(padded) == 1000
    assert not padded & nonces


def test_nonces_are_unique_across_threads_and_wrap_around() -> None:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda _: [crypto.next_nonce() for _ in range(5000)], range(8)))
    every = [nonce for batch in batches for nonce in batch]
    assert len(set(every)) == len(every) == 40_000
    assert {len(nonce) for nonce in every} == {crypto.NONCE_SIZE}
    counter = crypto._NonceCounter()
    counter._start = (1 << 96) - 2  # the last two nonces, then it wraps to zero
    assert [counter() for _ in range(3)] == [b"\xff" * 11 + b"\xfe", b"\xff" * 12, bytes(12)]


def test_a_forked_child_counts_from_a_start_of_its_own() -> None:
    """A child that went on counting from its parent's state would repeat the parent's nonces
    under the keys they share."""
    read_end, write_end = os.pipe()
    crypto.next_nonce()
    pid = os.fork()
    if pid == 0:  # the child: its next nonce to the parent, then out at once
        os.write(write_end, crypto.next_nonce())
        os._exit(0)
    os.close(write_end)
    child = os.read(read_end, crypto.NONCE_SIZE)
    os.close(read_end)
    os.waitpid(pid, 0)
    parent = [crypto.next_nonce() for _ in range(1000)]
    assert len(child) == crypto.NONCE_SIZE and child not in parent


@SETTINGS
@given(data_key=st.binary(min_size=32, max_size=32))
def test_seal_key_round_trip(data_key: bytes) -> None:
    sealed = crypto.seal_key(PUBLIC, data_key)
    assert len(sealed) == crypto.SEALED_KEY_SIZE
    assert data_key not in sealed
    assert crypto.open_sealed_key(PRIVATE, sealed) == data_key
    # Sealing is randomized (fresh ephemeral key each time).
    assert crypto.seal_key(PUBLIC, data_key) != sealed


def test_open_sealed_key_with_wrong_private_key_fails() -> None:
    other_private, _ = crypto.new_keypair()
    sealed = crypto.seal_key(PUBLIC, secrets.token_bytes(32))
    with pytest.raises(Unauthenticated):
        crypto.open_sealed_key(other_private, sealed)


@pytest.mark.parametrize("damage", ["short", "long", "flip-ephemeral", "flip-body", "zero-ephemeral"])
def test_damaged_sealed_key_fails_cleanly(damage: str) -> None:
    sealed = bytearray(crypto.seal_key(PUBLIC, secrets.token_bytes(32)))
    if damage == "short":
        sealed = sealed[:-1]
    elif damage == "long":
        sealed += b"\0"
    elif damage == "flip-ephemeral":
        sealed[3] ^= 0x40
    elif damage == "flip-body":
        sealed[-5] ^= 1
    else:
        sealed[: crypto.PUBLIC_KEY_SIZE] = bytes(crypto.PUBLIC_KEY_SIZE)
    with pytest.raises(Unauthenticated):
        crypto.open_sealed_key(PRIVATE, bytes(sealed))


def test_public_key_of_matches_keypair() -> None:
    assert crypto.public_key_of(PRIVATE) == PUBLIC
    assert len(PUBLIC) == crypto.PUBLIC_KEY_SIZE


@SETTINGS
@given(messages=st.lists(st.tuples(st.binary(max_size=1024), st.binary(max_size=4)), min_size=1, max_size=8))
def test_sealing_session_and_unsealer_round_trip(messages: list[tuple[bytes, bytes]]) -> None:
    first, second = crypto.SealingSession(PUBLIC), crypto.SealingSession(PUBLIC)
    assert first.data_key != second.data_key and first.sealed != second.sealed
    unsealer = crypto.Unsealer(PRIVATE)
    for i, (plaintext, aad) in enumerate(messages):
        session = first if i % 2 else second
        message = crypto.encrypt(session.data_key, plaintext, aad)
        assert unsealer.open(session.sealed, message, aad) == plaintext
        assert unsealer.open(session.sealed, memoryview(message), aad) == plaintext
        other = second if session is first else first
        with pytest.raises(Unauthenticated):
            unsealer.open(other.sealed, message, aad)


def test_unsealer_rejects_wrong_key_tampering_and_short_messages() -> None:
    session = crypto.SealingSession(PUBLIC)
    message = crypto.encrypt(session.data_key, b"secret data", b"\x00")
    other_private, _ = crypto.new_keypair()
    with pytest.raises(Unauthenticated):
        crypto.Unsealer(other_private).open(session.sealed, message, b"\x00")
    unsealer = crypto.Unsealer(PRIVATE)
    with pytest.raises(Unauthenticated):
        unsealer.open(session.sealed, message, b"\x01")  # wrong blob type
    for cut in (0, 10, len(message) - 1):
        with pytest.raises(Unauthenticated):
            unsealer.open(session.sealed, message[:cut], b"\x00")
    tampered = bytearray(message)
    tampered[20] ^= 1
    with pytest.raises(Unauthenticated):
        unsealer.open(session.sealed, bytes(tampered), b"\x00")
    # A cached job key must not let a tampered sealed key through either.
    assert unsealer.open(session.sealed, message, b"\x00") == b"secret data"
    bad_seal = bytearray(session.sealed)
    bad_seal[40] ^= 1
    with pytest.raises(Unauthenticated):
        unsealer.open(bytes(bad_seal), message, b"\x00")
    with pytest.raises(Unauthenticated):
        unsealer.open(session.sealed[:-1], message, b"\x00")


# --- padding ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(length=st.integers(0, 2**40))
def test_padme_bounds(length: int) -> None:
    padded = crypto.padme(length)
    assert padded >= length
    assert padded - length <= max(length * 12 // 100, 1)  # at most 12 % (Padmé's bound)
    assert crypto.padme(padded) == padded  # padded lengths are fixed points
    if length >= 1 << 20:
        assert padded - length <= length * 32 // 1000  # ≈3 % from a mebibyte on


def test_padme_hides_small_differences() -> None:
    """Files of nearby sizes get the same stored length: sizes are not recoverable exactly."""
    lengths = {crypto.padme(n) for n in range(100_000, 100_500)}
    assert len(lengths) <= 2
    assert len({crypto.padme(n) for n in range((1 << 20) + 1, (1 << 20) + 30_000)}) == 1


@SETTINGS
@given(header=st.binary(max_size=8), body=st.binary(max_size=200_000), extra=st.integers(0, 70_000),
       aad=st.binary(max_size=4))
def test_encrypt_padded_round_trip(header: bytes, body: bytes, extra: int, aad: bytes) -> None:
    """Both paths (one padded buffer for small bodies, pieces for large ones) give the AES-GCM
    encryption of header ‖ body ‖ zeros."""
    out = bytearray(crypto.AEAD_OVERHEAD + len(header) + len(body) + extra)
    crypto.encrypt_padded_into(KEY, aad, header, body, memoryview(out))
    assert crypto.decrypt(KEY, bytes(out), aad) == header + body + bytes(extra)
    with pytest.raises(ValueError):
        crypto.encrypt_padded_into(KEY, aad, header, body, memoryview(bytearray(len(header) + len(body))))


# --- signatures and sub-keys ----------------------------------------------------------------


@SETTINGS
@given(message=st.binary(max_size=2048), flip=st.integers(0, 63 * 8))
def test_signatures(message: bytes, flip: int) -> None:
    seed, public = crypto.new_signing_key()
    assert crypto.verifying_key_of(seed) == public
    signature = crypto.sign(seed, message)
    assert len(signature) == crypto.SIGNATURE_SIZE
    assert crypto.verify_signature(public, message, signature)
    assert not crypto.verify_signature(public, message + b"x", signature)
    bad = bytearray(signature)
    bad[flip // 8] ^= 1 << (flip % 8)
    assert not crypto.verify_signature(public, message, bytes(bad))
    _, other = crypto.new_signing_key()
    assert not crypto.verify_signature(other, message, signature)
    assert not crypto.verify_signature(b"short", message, signature)
    assert not crypto.verify_signature(public, message, b"")


def test_subkeys_are_separated() -> None:
    a, b = crypto.subkey(KEY, "snapshot id"), crypto.subkey(KEY, "files cache")
    assert len(a) == 32 and a != b != KEY
    assert crypto.subkey(OTHER_KEY, "snapshot id") != a
    assert crypto.keyed_hash(a, b"x") != crypto.keyed_hash(b, b"x")


@SETTINGS
@given(data=st.binary(max_size=2048))
def test_blob_id_is_keyed(data: bytes) -> None:
    ident = crypto.blob_id(KEY, data)
    assert len(ident) == 32
    assert ident == crypto.blob_id(KEY, memoryview(data))
    assert ident != crypto.blob_id(OTHER_KEY, data)
    assert ident != blake3.blake3(data).digest()
    assert ident != crypto.content_hash(data)


@SETTINGS
@given(st.binary(max_size=300), st.lists(st.binary(max_size=300), max_size=5), st.integers(1, 32))
def test_a_prefixed_keyed_hash_is_the_keyed_hash_of_prefix_and_data(
    prefix: bytes, names: list[bytes], size: int
) -> None:
    key = secrets.token_bytes(32)
    hashed = crypto.PrefixedKeyedHash(key, prefix, size)
    for name in names:  # the prefix's state is copied per call, never consumed
        assert hashed(name) == crypto.keyed_hash(key, prefix + name)[:size]


def test_default_kdf_meets_the_floor_and_weak_params_need_the_test_knob() -> None:
    default = crypto.Argon2Params()
    assert default.memory_kib >= 64 * 1024 and default.time_cost >= 3 and not default.test_only
    with pytest.raises(ValueError):
        crypto.Argon2Params(time_cost=1, memory_kib=64)
    with pytest.raises(ValueError):
        crypto.Argon2Params(time_cost=3, memory_kib=32 * 1024)
    assert crypto.Argon2Params.weak_for_tests().test_only


def test_derive_key_depends_on_password_and_salt() -> None:
    params = crypto.Argon2Params.weak_for_tests()
    base = crypto.derive_key("password", b"salt" * 8, params)
    assert len(base) == crypto.KEY_SIZE
    assert base == crypto.derive_key("password", b"salt" * 8, params)
    assert base != crypto.derive_key("passwore", b"salt" * 8, params)
    assert base != crypto.derive_key("password", b"SALT" * 8, params)


@pytest.fixture
def pycryptodome_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the pure pycryptodome AES-GCM path (installs without `cryptography`)."""
    monkeypatch.setattr(crypto, "_OpenSSLGCM", None)
    monkeypatch.setattr(crypto, "_InvalidTag", ValueError)


@pytest.mark.skipif(
    crypto._OpenSSLGCM is None, reason="`cryptography` is not installed: one AES-GCM path only"
)
@SETTINGS
@given(plaintext=st.binary(max_size=100_000), aad=st.binary(max_size=8), pad=st.integers(0, 3000))
def test_openssl_and_pycryptodome_paths_interoperate(plaintext: bytes, aad: bytes, pad: int) -> None:
    """Both AES-GCM back ends produce the same format: either reads what the other wrote."""
    by_openssl = crypto.encrypt(KEY, plaintext, aad)
    padded_by_openssl = bytearray(crypto.AEAD_OVERHEAD + 1 + len(plaintext) + pad)
    crypto.encrypt_padded_into(KEY, aad, b"H", plaintext, memoryview(padded_by_openssl))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(crypto, "_OpenSSLGCM", None)
        mp.setattr(crypto, "_InvalidTag", ValueError)
        assert crypto.decrypt(KEY, by_openssl, aad) == plaintext
        assert crypto.decrypt(KEY, bytes(padded_by_openssl), aad) == b"H" + plaintext + bytes(pad)
        by_pycryptodome = crypto.encrypt(KEY, plaintext, aad)
        padded_by_pycryptodome = bytearray(len(padded_by_openssl))
        crypto.encrypt_padded_into(KEY, aad, b"H", plaintext, memoryview(padded_by_pycryptodome))
        with pytest.raises(Unauthenticated):
            crypto.decrypt(OTHER_KEY, by_pycryptodome, aad)
    assert crypto.decrypt(KEY, by_pycryptodome, aad) == plaintext
    assert crypto.decrypt(KEY, bytes(padded_by_pycryptodome), aad) == b"H" + plaintext + bytes(pad)


def test_pycryptodome_path_detects_tampering(pycryptodome_only: None) -> None:
    message = bytearray(crypto.encrypt(KEY, b"hello world", b"aad"))
    assert crypto.decrypt(KEY, bytes(message), b"aad") == b"hello world"
    message[-1] ^= 1
    with pytest.raises(Unauthenticated):
        crypto.decrypt(KEY, bytes(message), b"aad")
