"""Key files: the repository's secrets, wrapped by a key derived from the password (argon2id)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import msgspec

from timevault.core import crypto
from timevault.core.errors import DamagedData, WeakPassword, WrongPassword
from timevault.core.repository.format import KEY_FILE_VERSION, KdfParams, KeyFile, MasterKeys, WriteKeys

MIN_PASSWORD_LENGTH = 4
# What a key file may ask of a reader. A hostile repository must not make us burn unbounded
# memory or time, nor crash argon2 with parameters it cannot use.
MAX_KDF_MEMORY_KIB = 1024 * 1024  # 1 GiB
MAX_KDF_TIME_COST = 10
MAX_KDF_WORK_KIB = 4 * 1024 * 1024  # time_cost · memory: at most ~4 GiB of passes (~5 s here)
MAX_KDF_PARALLELISM = 16
SALT_SIZES = range(16, 65)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")


def new_master_keys(repo_id: str) -> MasterKeys:
    private_key, public_key = crypto.new_keypair()
    sign_key, verify_key = crypto.new_signing_key()
    write = WriteKeys(
        repo_id=repo_id,
        public_key=public_key,
        id_key=secrets.token_bytes(crypto.KEY_SIZE),
        meta_key=secrets.token_bytes(crypto.KEY_SIZE),
        # A per-repository gear table, so chunk boundaries don't fingerprint known files.
        chunker_seed=secrets.randbits(63) | 1,
        verify_key=verify_key,
    )
    return MasterKeys(write=write, private_key=private_key, sign_key=sign_key)


def wrap_keys(keys: MasterKeys, password: str, params: crypto.Argon2Params | None = None) -> bytes:
    """Encrypt `keys` under `password`; returns the JSON bytes of a key file."""
    check_password(password)
    params = params or crypto.Argon2Params()
    salt = secrets.token_bytes(crypto.SALT_SIZE)
    kek = crypto.derive_key(password, salt, params)
    key_file = KeyFile(
        version=KEY_FILE_VERSION,
        kdf=KdfParams(
            name="argon2id",
            time_cost=params.time_cost,
            memory_kib=params.memory_kib,
            parallelism=params.parallelism,
            salt=salt,
        ),
        created=datetime.now(UTC).isoformat(),
        data=crypto.encrypt(kek, msgspec.msgpack.encode(keys), b"keys"),
    )
    return msgspec.json.encode(key_file)


def kdf_params_of(kdf: KdfParams) -> crypto.Argon2Params:
    """The parameters of a key file, or WrongPassword when a reader must not use them."""
    if (
        kdf.name != "argon2id"
        or not 1 <= kdf.time_cost <= MAX_KDF_TIME_COST
        or not 1 <= kdf.parallelism <= MAX_KDF_PARALLELISM
        or not 8 * kdf.parallelism <= kdf.memory_kib <= MAX_KDF_MEMORY_KIB
        or kdf.time_cost * kdf.memory_kib > MAX_KDF_WORK_KIB
        or len(kdf.salt) not in SALT_SIZES
    ):
        raise WrongPassword("key file asks for unsupported key derivation parameters")
    # Weaker than today's floor is still readable (older or test key files); `passwd` re-wraps.
    return crypto.Argon2Params(kdf.time_cost, kdf.memory_kib, kdf.parallelism, test_only=True)


def unwrap_keys(key_file_bytes: bytes, password: str) -> MasterKeys:
    try:
        key_file = msgspec.json.decode(key_file_bytes, type=KeyFile)
    except msgspec.DecodeError as exc:
        raise WrongPassword(f"key file is damaged: {exc}") from exc
    if key_file.version != KEY_FILE_VERSION:
        raise WrongPassword(f"key file version {key_file.version} is not supported")
    params = kdf_params_of(key_file.kdf)
    kek = crypto.derive_key(password, key_file.kdf.salt, params)
    try:
        plaintext = crypto.decrypt(kek, key_file.data, b"keys")
    except crypto.Unauthenticated as exc:
        raise WrongPassword("wrong password") from exc
    try:
        keys = msgspec.msgpack.decode(plaintext, type=MasterKeys)
    except msgspec.DecodeError as exc:
        raise WrongPassword(f"key file is damaged: {exc}") from exc
    if crypto.verifying_key_of(keys.sign_key) != keys.write.verify_key:
        raise WrongPassword("key file is damaged: its signing keys do not match")
    return keys


def encode_write_keys(keys: WriteKeys) -> bytes:
    return msgspec.msgpack.encode(keys)


def decode_write_keys(data: bytes) -> WriteKeys:
    try:
        return msgspec.msgpack.decode(data, type=WriteKeys)
    except msgspec.DecodeError as exc:
        raise DamagedData("write keys are damaged (or from a repository of format 1)") from exc
