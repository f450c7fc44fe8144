"""AEAD, keyed ids and X25519 sealing: round trips, tamper detection, key separation."""

from __future__ import annotations

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
    session = crypto.SealingSession(PUBLIC)
    sealed = {
        bytes(session.seal(b"x", b"")[crypto.SEALED_KEY_SIZE :][: crypto.NONCE_SIZE]) for _ in range(1000)
    }
    assert len(sealed) == 1000


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
    assert first.data_key != second.data_key
    unsealer = crypto.Unsealer(PRIVATE)
    for i, (plaintext, aad) in enumerate(messages):
        session = first if i % 2 else second
        sealed = session.seal(plaintext, aad)
        assert sealed.startswith(session.sealed)
        assert unsealer.open(sealed, aad) == plaintext
        assert unsealer.open(memoryview(sealed), aad) == plaintext


def test_unsealer_rejects_wrong_key_tampering_and_short_messages() -> None:
    session = crypto.SealingSession(PUBLIC)
    sealed = session.seal(b"secret data", b"\x00")
    other_private, _ = crypto.new_keypair()
    with pytest.raises(Unauthenticated):
        crypto.Unsealer(other_private).open(sealed, b"\x00")
    unsealer = crypto.Unsealer(PRIVATE)
    with pytest.raises(Unauthenticated):
        unsealer.open(sealed, b"\x01")  # wrong blob type
    for cut in (0, 10, crypto.SEALED_KEY_SIZE, len(sealed) - 1):
        with pytest.raises(Unauthenticated):
            unsealer.open(sealed[:cut], b"\x00")
    tampered = bytearray(sealed)
    tampered[crypto.SEALED_KEY_SIZE + 20] ^= 1
    with pytest.raises(Unauthenticated):
        unsealer.open(bytes(tampered), b"\x00")
    # A cached job key must not let a tampered sealed key through either.
    assert unsealer.open(sealed, b"\x00") == b"secret data"
    tampered = bytearray(sealed)
    tampered[40] ^= 1
    with pytest.raises(Unauthenticated):
        unsealer.open(bytes(tampered), b"\x00")


@SETTINGS
@given(data=st.binary(max_size=2048))
def test_blob_id_is_keyed(data: bytes) -> None:
    ident = crypto.blob_id(KEY, data)
    assert len(ident) == 32
    assert ident == crypto.blob_id(KEY, memoryview(data))
    assert ident != crypto.blob_id(OTHER_KEY, data)
    assert ident != blake3.blake3(data).digest()
    assert ident != crypto.content_hash(data)


def test_derive_key_depends_on_password_and_salt() -> None:
    params = crypto.ScryptParams(n=2**10)
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
@given(plaintext=st.binary(max_size=2048), aad=st.binary(max_size=8))
def test_openssl_and_pycryptodome_paths_interoperate(plaintext: bytes, aad: bytes) -> None:
    """Both AES-GCM back ends produce the same format: either reads what the other wrote."""
    by_openssl = crypto.encrypt(KEY, plaintext, aad)
    session = crypto.SealingSession(PUBLIC)
    sealed_by_openssl = bytes(session.seal(plaintext, aad, b"H"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(crypto, "_OpenSSLGCM", None)
        mp.setattr(crypto, "_InvalidTag", ValueError)
        assert crypto.decrypt(KEY, by_openssl, aad) == plaintext
        assert crypto.Unsealer(PRIVATE).open(sealed_by_openssl, aad, header_size=1) == plaintext
        by_pycryptodome = crypto.encrypt(KEY, plaintext, aad)
        sealed_by_pycryptodome = bytes(session.seal(plaintext, aad, b"H"))
        with pytest.raises(Unauthenticated):
            crypto.decrypt(OTHER_KEY, by_pycryptodome, aad)
    assert crypto.decrypt(KEY, by_pycryptodome, aad) == plaintext
    assert crypto.Unsealer(PRIVATE).open(sealed_by_pycryptodome, aad, header_size=1) == plaintext


def test_pycryptodome_path_detects_tampering(pycryptodome_only: None) -> None:
    message = bytearray(crypto.encrypt(KEY, b"hello world", b"aad"))
    assert crypto.decrypt(KEY, bytes(message), b"aad") == b"hello world"
    message[-1] ^= 1
    with pytest.raises(Unauthenticated):
        crypto.decrypt(KEY, bytes(message), b"aad")
