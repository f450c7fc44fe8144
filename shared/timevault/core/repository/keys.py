"""Key files: the repository's secrets, wrapped by a key derived from the password."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import msgspec

from timevault.core import crypto
from timevault.core.errors import DamagedData, WeakPassword, WrongPassword
from timevault.core.repository.format import KdfParams, KeyFile, MasterKeys, WriteKeys

MIN_PASSWORD_LENGTH = 4
# The most memory a key file may make scrypt use (the default N=2^15, r=8 needs 32 MiB).
MAX_KDF_MEMORY = 2**30


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")


def new_master_keys(repo_id: str) -> MasterKeys:
    private_key, public_key = crypto.new_keypair()
    write = WriteKeys(
        repo_id=repo_id,
        public_key=public_key,
        id_key=secrets.token_bytes(crypto.KEY_SIZE),
        meta_key=secrets.token_bytes(crypto.KEY_SIZE),
        # A per-repository gear table, so chunk boundaries don't fingerprint known files.
        chunker_seed=secrets.randbits(63) | 1,
    )
    return MasterKeys(write=write, private_key=private_key)


def wrap_keys(keys: MasterKeys, password: str, params: crypto.ScryptParams | None = None) -> bytes:
    """Encrypt `keys` under `password`; returns the JSON bytes of a key file."""
    check_password(password)
    params = params or crypto.ScryptParams()
    salt = secrets.token_bytes(32)
    kek = crypto.derive_key(password, salt, params)
    key_file = KeyFile(
        version=1,
        kdf=KdfParams(name="scrypt", n=params.n, r=params.r, p=params.p, salt=salt),
        created=datetime.now(UTC).isoformat(),
        data=crypto.encrypt(kek, msgspec.msgpack.encode(keys), b"keys"),
    )
    return msgspec.json.encode(key_file)


def unwrap_keys(key_file_bytes: bytes, password: str) -> MasterKeys:
    try:
        key_file = msgspec.json.decode(key_file_bytes, type=KeyFile)
    except msgspec.DecodeError as exc:
        raise WrongPassword(f"key file is damaged: {exc}") from exc
    kdf = key_file.kdf
    if (
        kdf.name != "scrypt"
        or not 2 <= kdf.n <= 2**22
        or kdf.n & (kdf.n - 1)
        or kdf.r < 1
        or kdf.p < 1
        or kdf.r * kdf.p > 64
        or 128 * kdf.n * kdf.r > MAX_KDF_MEMORY
    ):
        # A hostile repository must not make us burn unbounded memory or time (scrypt needs
        # 128·N·r bytes), nor crash us with parameters scrypt cannot use.
        raise WrongPassword("key file asks for unsupported key derivation parameters")
    params = crypto.ScryptParams(n=key_file.kdf.n, r=key_file.kdf.r, p=key_file.kdf.p)
    kek = crypto.derive_key(password, key_file.kdf.salt, params)
    try:
        plaintext = crypto.decrypt(kek, key_file.data, b"keys")
    except crypto.Unauthenticated as exc:
        raise WrongPassword("wrong password") from exc
    return msgspec.msgpack.decode(plaintext, type=MasterKeys)


def encode_write_keys(keys: WriteKeys) -> bytes:
    return msgspec.msgpack.encode(keys)


def decode_write_keys(data: bytes) -> WriteKeys:
    try:
        return msgspec.msgpack.decode(data, type=WriteKeys)
    except msgspec.DecodeError as exc:
        raise DamagedData("write keys are damaged") from exc
