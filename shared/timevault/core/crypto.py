"""Cryptographic primitives of the repository format.

- Password → key-encryption key with argon2id (parameters stored beside the wrapped keys).
- AES-256-GCM for every stored object, with a unique 96-bit nonce per message (`next_nonce`).
- Keyed BLAKE3 for blob ids, so ids never reveal a plain hash of the content; BLAKE3's key
  derivation mode for sub-keys (one purpose per key).
- X25519 sealing for the write-only tier: the machine that backs up holds only the public
  key; each backup job picks a random data key and seals it to that public key, so reading
  data back needs the private key, which is stored only wrapped by the password.
- Ed25519 signatures by the password holder (config, endorsements of the history): the
  services hold only the verifying key, so they can check what the password holder signed
  but never sign anything themselves.
- Padmé padding of stored lengths, so an observer of the packs learns little of blob sizes.

Authentication failure is a value (`Unauthenticated`), never a crash.
"""

from __future__ import annotations

import itertools
import os
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from threading import Lock
from types import ModuleType
from typing import TYPE_CHECKING, cast

import blake3

from timevault.core.buffers import BytesLike
from timevault.core.errors import Unauthenticated

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _pycryptodome_binds_with_ctypes() -> None:
    """Make pycryptodome load its C code through ctypes, not cffi.

    pycryptodome uses cffi whenever it can be imported, and then parses C declarations for each
    of its libraries at import: ~40 ms at the start of every command. With cffi out of sight it
    takes ctypes, its binding on systems without cffi, which loads the same compiled code
    without parsing. The choice is made once, in `Crypto.Util._raw_api`.
    """
    if "Crypto.Util._raw_api" in sys.modules:
        return
    # The import system documents a None entry: "import cffi" then raises ImportError.
    modules = cast("dict[str, ModuleType | None]", sys.modules)
    had, hidden = "cffi" in modules, modules.get("cffi")
    modules["cffi"] = None
    try:
        import Crypto.Util._raw_api  # noqa: F401
    finally:
        if had:
            modules["cffi"] = hidden
        else:
            del modules["cffi"]


_pycryptodome_binds_with_ctypes()

from Crypto.Cipher import AES  # noqa: E402
from Crypto.Hash import SHA256  # noqa: E402
from Crypto.Protocol.DH import import_x25519_private_key, import_x25519_public_key, key_agreement  # noqa: E402
from Crypto.Protocol.KDF import HKDF  # noqa: E402
from Crypto.PublicKey import ECC  # noqa: E402
from Crypto.Signature import eddsa  # noqa: E402

# The same AES-256-GCM bytes either way. pycryptodome builds GCM's hash tables in Python for
# every message (~110 µs holding the GIL); OpenSSL (via `cryptography`) takes ~3 µs. With
# tens of thousands of small files per GiB, that is seconds of serialized CPU per backup.
_OpenSSLGCM: type[AESGCM] | None
_InvalidTag: type[Exception]
try:
    from cryptography.exceptions import InvalidTag as _InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher as _OpenSSLCipher
    from cryptography.hazmat.primitives.ciphers import algorithms as _openssl_algorithms
    from cryptography.hazmat.primitives.ciphers import modes as _openssl_modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM as _OpenSSLGCM
except ImportError:  # pragma: no cover - the pure pycryptodome path is tested explicitly
    _OpenSSLGCM = None
    _InvalidTag = ValueError

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
AEAD_OVERHEAD = NONCE_SIZE + TAG_SIZE
PUBLIC_KEY_SIZE = 32
SEALED_KEY_SIZE = PUBLIC_KEY_SIZE + AEAD_OVERHEAD + KEY_SIZE
SIGNATURE_SIZE = 64
SALT_SIZE = 32

# RFC 9106's second recommendation (64 MiB, 3 passes, 4 lanes): ~0.1 s here. The floor below
# is what `wrap_keys` accepts for real key files; readers accept the bounds in `keys.py`.
ARGON2_MIN_TIME_COST = 3
ARGON2_MIN_MEMORY_KIB = 64 * 1024


@dataclass(frozen=True)
class Argon2Params:
    """argon2id cost parameters for deriving a key from a password.

    The defaults meet the format's floor (≥ 64 MiB, ≥ 3 passes). Only `weak_for_tests()` makes
    cheaper ones, and says so in its name: test suites create hundreds of repositories.
    """

    time_cost: int = ARGON2_MIN_TIME_COST
    memory_kib: int = ARGON2_MIN_MEMORY_KIB
    parallelism: int = 4
    test_only: bool = False

    def __post_init__(self) -> None:
        if not self.test_only and (
            self.time_cost < ARGON2_MIN_TIME_COST or self.memory_kib < ARGON2_MIN_MEMORY_KIB
        ):
            raise ValueError(
                f"argon2id needs at least {ARGON2_MIN_MEMORY_KIB // 1024} MiB and "
                f"{ARGON2_MIN_TIME_COST} passes"
            )
        if self.parallelism < 1 or self.memory_kib < 8 * self.parallelism or self.time_cost < 1:
            raise ValueError("argon2id parameters out of range")

    @classmethod
    def weak_for_tests(cls) -> Argon2Params:
        """Cheap parameters (64 KiB, 1 pass). For tests only: never for a real repository."""
        return cls(time_cost=1, memory_kib=64, parallelism=1, test_only=True)


def derive_key(password: str, salt: bytes, params: Argon2Params) -> bytes:
    from argon2.low_level import Type, hash_secret_raw  # imported on use: ~10 ms of cffi set-up

    return hash_secret_raw(
        password.encode("utf-8"),
        salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=KEY_SIZE,
        type=Type.ID,
    )


def subkey(key: bytes, purpose: str) -> bytes:
    """A key for one purpose derived from `key` (BLAKE3 key derivation, a constant context)."""
    return blake3.blake3(key, derive_key_context=f"timevault 2 {purpose}").digest()


def keyed_hash(key: bytes, data: BytesLike) -> bytes:
    """Keyed BLAKE3 (32 bytes): names that only key holders can compute or check."""
    return blake3.blake3(data, key=key).digest()


KeyedHasher = blake3.blake3


def keyed_hasher(key: bytes) -> KeyedHasher:
    """`keyed_hash` of data that comes in pieces: `update` with each, then `digest`."""
    return blake3.blake3(key=key)


class PrefixedKeyedHash:
    """`keyed_hash(key, prefix + data)[:size]` for many `data` after one `prefix`: the prefix
    is hashed once, and each call hashes only its `data` (a folder's path, then each name)."""

    def __init__(self, key: bytes, prefix: BytesLike, size: int) -> None:
        self._state = blake3.blake3(prefix, key=key)
        self._size = size

    def __call__(self, data: BytesLike) -> bytes:
        hasher = self._state.copy()
        hasher.update(data)
        return hasher.digest(self._size)  # BLAKE3's shorter outputs are prefixes of longer ones


def padme(length: int) -> int:
    """Padmé (Nikitin et al., PETS 2019): round `length` up so it leaks O(log log L) bits.

    The overhead is at most 12 % (≈3 % around 1 MiB, less for larger lengths).
    """
    if length < 2:
        return length
    exponent = length.bit_length() - 1  # floor(log2 L)
    low_bits = exponent - exponent.bit_length()  # exponent - (floor(log2 exponent) + 1)
    mask = (1 << low_bits) - 1
    return (length + mask) & ~mask


_NONCE_MASK = (1 << (8 * NONCE_SIZE)) - 1


class _NonceCounter:
    """96-bit nonces: a random start drawn once per process, then counting up.

    A nonce per message from the system's random source cost a system call that gives up the
    GIL; a backup of many small files spent a fifth of its encode threads waiting to get it
    back. Counting from a random start repeats no nonce within a process (2^96 messages), and
    two processes (or machines) that share a key repeat one only if the ranges they counted
    overlap: with n messages in all, a chance of about n / 2^96 per pair, far below the
    birthday bound n^2 / 2^97 of drawing every nonce at random. A forked child draws a new
    start (`os.register_at_fork`), so it never counts along with its parent.
    """

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self._start = int.from_bytes(secrets.token_bytes(NONCE_SIZE), "big")
        self._count = itertools.count()  # next() on it is atomic under the GIL: threads share it

    def __call__(self) -> bytes:
        return ((self._start + next(self._count)) & _NONCE_MASK).to_bytes(NONCE_SIZE, "big")


next_nonce = _NonceCounter()
os.register_at_fork(after_in_child=next_nonce.restart)
_gcm_by_key: dict[bytes, AESGCM] = {}


def _gcm(key: bytes) -> AESGCM:
    """One AESGCM object per key (a backup encrypts every small blob with the same data key;
    making the object costs as much as encrypting a few KiB). Shared across threads: each
    encrypt/decrypt call uses its own OpenSSL context."""
    gcm = _gcm_by_key.get(key)
    if gcm is None:
        assert _OpenSSLGCM is not None
        if len(_gcm_by_key) >= 64:
            _gcm_by_key.clear()
        gcm = _gcm_by_key[key] = _OpenSSLGCM(key)
    return gcm


def encrypt(key: bytes, plaintext: BytesLike, aad: bytes = b"") -> bytes:
    """AES-256-GCM: returns nonce || ciphertext || tag."""
    nonce = next_nonce()
    if _OpenSSLGCM is not None:
        return nonce + _gcm(key).encrypt(nonce, plaintext, aad or None)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    if aad:
        cipher.update(aad)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return b"".join((nonce, ciphertext, tag))


def encrypt_into(key: bytes, plaintext: BytesLike, aad: bytes, out: memoryview) -> None:
    """Like `encrypt`, writing nonce ‖ ciphertext ‖ tag into `out` (exactly that long)."""
    nonce = next_nonce()
    out[:NONCE_SIZE] = nonce
    if _OpenSSLGCM is not None:
        _gcm(key).encrypt_into(nonce, plaintext, aad or None, out[NONCE_SIZE:])
        return
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    if aad:
        cipher.update(aad)
    cipher.encrypt(plaintext, output=out[NONCE_SIZE:-TAG_SIZE])
    out[-TAG_SIZE:] = cipher.digest()


def decrypt(key: bytes, message: BytesLike, aad: bytes = b"") -> bytes:
    """Inverse of `encrypt`; raises Unauthenticated on any tampering or a wrong key."""
    if len(message) < AEAD_OVERHEAD:
        raise Unauthenticated("ciphertext too short")
    view = memoryview(message)
    if _OpenSSLGCM is not None:
        try:
            return _gcm(key).decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad or None)
        except _InvalidTag as exc:
            raise Unauthenticated("ciphertext failed authentication") from exc
    cipher = AES.new(key, AES.MODE_GCM, nonce=bytes(view[:NONCE_SIZE]))
    if aad:
        cipher.update(aad)
    try:
        return cipher.decrypt_and_verify(view[NONCE_SIZE:-TAG_SIZE], view[-TAG_SIZE:])
    except ValueError as exc:
        raise Unauthenticated("ciphertext failed authentication") from exc


# Blobs above this size are encrypted in pieces (header, body, padding) straight into the output
# buffer; smaller ones are first copied into one padded buffer, which is cheaper for them.
_STREAM_ABOVE = 64 * 1024
_ZEROS = bytes(256 * 1024)


def encrypt_padded_into(
    key: bytes, aad: bytes, header: bytes, body: BytesLike, out: memoryview
) -> None:
    """nonce ‖ AES-GCM(header ‖ body ‖ zeros) ‖ tag into `out`; zeros fill it to its length.

    Equivalent to `encrypt_into` of the joined, zero-padded plaintext, without building it.
    """
    padding = len(out) - AEAD_OVERHEAD - len(header) - len(body)
    if padding < 0:
        raise ValueError("output buffer too small")
    if len(body) <= _STREAM_ABOVE:
        plaintext = bytearray(len(out) - AEAD_OVERHEAD)
        plaintext[: len(header)] = header
        plaintext[len(header) : len(header) + len(body)] = body
        encrypt_into(key, plaintext, aad, out)
        return
    pieces: list[BytesLike] = [header, body]
    while padding:
        step = min(padding, len(_ZEROS))
        pieces.append(memoryview(_ZEROS)[:step])
        padding -= step
    encrypt_pieces_into(key, aad, pieces, out)


def encrypt_pieces_into(key: bytes, aad: bytes, pieces: Iterable[BytesLike], out: memoryview) -> None:
    """nonce ‖ AES-GCM(the pieces joined) ‖ tag into `out`, which is exactly that long: the
    same as `encrypt_into` of the joined plaintext, which is never built (the pieces may come
    from a generator, e.g. a list of a million references read from disk)."""
    nonce = next_nonce()
    out[:NONCE_SIZE] = nonce
    position = NONCE_SIZE
    end = len(out) - TAG_SIZE
    if _OpenSSLGCM is not None:
        encryptor = _OpenSSLCipher(_openssl_algorithms.AES(key), _openssl_modes.GCM(nonce)).encryptor()
        if aad:
            encryptor.authenticate_additional_data(aad)
        for piece in pieces:
            if position + len(piece) > end:
                raise ValueError("output buffer too small")
            # update_into wants 15 bytes of slack past the piece: the tag's room provides it.
            position += encryptor.update_into(piece, out[position:])
        encryptor.finalize()
        tag = encryptor.tag
    else:
        cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
        if aad:
            cipher.update(aad)
        for piece in pieces:
            if position + len(piece) > end:
                raise ValueError("output buffer too small")
            cipher.encrypt(piece, output=out[position : position + len(piece)])
            position += len(piece)
        tag = cipher.digest()
    if position != end:
        raise ValueError("output buffer too large")
    out[position:] = tag


class StreamDecryptor:
    """Decrypts nonce ‖ ciphertext ‖ tag (as `encrypt` wrote it) piece by piece, given the nonce
    and the tag first (a ranged read of the message's ends).

    What `update` returns is NOT authenticated until `finish` returns: use it only for work
    that is thrown away when `finish` raises Unauthenticated.
    """

    def __init__(self, key: bytes, nonce: bytes, tag: bytes, aad: bytes = b"") -> None:
        if len(nonce) != NONCE_SIZE or len(tag) != TAG_SIZE:
            raise Unauthenticated("ciphertext too short")
        self._tag = tag
        if _OpenSSLGCM is not None:
            self._openssl = _OpenSSLCipher(
                _openssl_algorithms.AES(key), _openssl_modes.GCM(nonce, tag)
            ).decryptor()
            if aad:
                self._openssl.authenticate_additional_data(aad)
        else:
            self._cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
            if aad:
                self._cipher.update(aad)

    def update(self, piece: BytesLike) -> bytes:
        if _OpenSSLGCM is not None:
            return self._openssl.update(piece)
        return self._cipher.decrypt(piece)

    def finish(self) -> None:
        """Raises Unauthenticated unless every piece, and the tag, were as written."""
        try:
            if _OpenSSLGCM is not None:
                self._openssl.finalize()
            else:
                self._cipher.verify(self._tag)
        except (ValueError, _InvalidTag) as exc:
            raise Unauthenticated("ciphertext failed authentication") from exc


def blob_id(id_key: bytes, data: BytesLike) -> bytes:
    """The keyed BLAKE3 id of a blob's plaintext (32 bytes)."""
    return blake3.blake3(data, key=id_key).digest()


def content_hash(data: BytesLike) -> bytes:
    """Unkeyed BLAKE3, used only for names of objects that hold ciphertext (packs)."""
    return blake3.blake3(data).digest()


def content_hash_of_parts(parts: Iterable[BytesLike]) -> bytes:
    """`content_hash` of the parts' concatenation, without concatenating them."""
    hasher = blake3.blake3()
    for part in parts:
        hasher.update(part)
    return hasher.digest()


def new_keypair() -> tuple[bytes, bytes]:
    """Return (private seed, public key), both 32 raw bytes of an X25519 key."""
    private = ECC.generate(curve="curve25519")
    return private.seed, private.public_key().export_key(format="raw")


def public_key_of(private_seed: bytes) -> bytes:
    return import_x25519_private_key(private_seed).public_key().export_key(format="raw")


def _wrapping_key(shared_secret: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return HKDF(
        shared_secret + ephemeral_public + recipient_public,
        KEY_SIZE,
        b"",
        SHA256,
        context=b"timevault seal v1",
    )


def seal_key(recipient_public: bytes, data_key: bytes) -> bytes:
    """Encrypt `data_key` so only the holder of the recipient's private key can open it."""
    ephemeral = ECC.generate(curve="curve25519")
    ephemeral_public = ephemeral.public_key().export_key(format="raw")
    shared = key_agreement(
        static_priv=ephemeral,
        static_pub=import_x25519_public_key(recipient_public),
        kdf=lambda secret: secret,
    )
    wrapping = _wrapping_key(shared, ephemeral_public, recipient_public)
    return ephemeral_public + encrypt(wrapping, data_key)


def open_sealed_key(private_seed: bytes, sealed: bytes) -> bytes:
    if len(sealed) != SEALED_KEY_SIZE:
        raise Unauthenticated("sealed key has the wrong size")
    private = import_x25519_private_key(private_seed)
    ephemeral_public = sealed[:PUBLIC_KEY_SIZE]
    try:
        peer = import_x25519_public_key(ephemeral_public)
        shared = key_agreement(static_priv=private, static_pub=peer, kdf=lambda secret: secret)
    except ValueError as exc:
        raise Unauthenticated("sealed key is malformed") from exc
    wrapping = _wrapping_key(shared, ephemeral_public, private.public_key().export_key(format="raw"))
    return decrypt(wrapping, sealed[PUBLIC_KEY_SIZE:])


@dataclass
class SealingSession:
    """One random data key per backup job, sealed once to the repository's public key.

    Blobs carry only nonce ‖ ciphertext ‖ tag; the sealed key travels beside them (in the pack
    header and the index), once per pack, so blob boundaries inside a pack are not visible.
    """

    public_key: bytes
    data_key: bytes = field(default_factory=lambda: secrets.token_bytes(KEY_SIZE))
    sealed: bytes = b""

    def __post_init__(self) -> None:
        self.sealed = seal_key(self.public_key, self.data_key)


class Unsealer:
    """Opens data sealed by any `SealingSession`; caches each job's unsealed data key."""

    def __init__(self, private_seed: bytes) -> None:
        self._private_seed = private_seed
        self._keys: dict[bytes, bytes] = {}
        self._lock = Lock()

    def data_key(self, sealed: bytes) -> bytes:
        with self._lock:
            key = self._keys.get(sealed)
        if key is None:
            key = open_sealed_key(self._private_seed, sealed)
            with self._lock:
                self._keys[sealed] = key
        return key

    def open(self, sealed: bytes, message: BytesLike, aad: bytes) -> bytes:
        """Decrypt `message` (nonce ‖ ciphertext ‖ tag) with the data key sealed in `sealed`."""
        return decrypt(self.data_key(sealed), message, aad)


# --- signatures (the password holder's) ---------------------------------------------------


def new_signing_key() -> tuple[bytes, bytes]:
    """Return (private seed, public key), both 32 raw bytes of an Ed25519 key."""
    private = ECC.generate(curve="ed25519")
    return private.seed, private.public_key().export_key(format="raw")


def sign(private_seed: bytes, message: bytes) -> bytes:
    key = ECC.construct(curve="ed25519", seed=private_seed)
    return eddsa.new(key, "rfc8032").sign(message)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        key = eddsa.import_public_key(public_key)
        eddsa.new(key, "rfc8032").verify(message, signature)
    except (ValueError, TypeError):
        return False
    return True


def verifying_key_of(private_seed: bytes) -> bytes:
    return ECC.construct(curve="ed25519", seed=private_seed).public_key().export_key(format="raw")
