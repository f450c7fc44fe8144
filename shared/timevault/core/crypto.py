"""Cryptographic primitives of the repository format.

- Password → key-encryption key with scrypt (parameters stored beside the wrapped keys).
- AES-256-GCM for every stored object, with a fresh random 96-bit nonce per message.
- Keyed BLAKE3 for blob ids, so ids never reveal a plain hash of the content.
- X25519 sealing for the write-only tier: the machine that backs up holds only the public
  key; each backup job picks a random data key and seals it to that public key, so reading
  data back needs the private key, which is stored only wrapped by the password.

Authentication failure is a value (`Unauthenticated`), never a crash.
"""

from __future__ import annotations

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
from Crypto.Protocol.KDF import HKDF, scrypt  # noqa: E402
from Crypto.PublicKey import ECC  # noqa: E402

# The same AES-256-GCM bytes either way. pycryptodome builds GCM's hash tables in Python for
# every message (~110 µs holding the GIL); OpenSSL (via `cryptography`) takes ~3 µs. With
# tens of thousands of small files per GiB, that is seconds of serialized CPU per backup.
_OpenSSLGCM: type[AESGCM] | None
_InvalidTag: type[Exception]
try:
    from cryptography.exceptions import InvalidTag as _InvalidTag
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


@dataclass(frozen=True)
class ScryptParams:
    """Cost parameters for deriving a key from a password."""

    n: int = 2**15
    r: int = 8
    p: int = 1


def derive_key(password: str, salt: bytes, params: ScryptParams) -> bytes:
    return scrypt(password.encode("utf-8"), salt, KEY_SIZE, N=params.n, r=params.r, p=params.p)


def encrypt(key: bytes, plaintext: BytesLike, aad: bytes = b"") -> bytes:
    """AES-256-GCM: returns nonce || ciphertext || tag."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    if _OpenSSLGCM is not None:
        return nonce + _OpenSSLGCM(key).encrypt(nonce, plaintext, aad or None)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    if aad:
        cipher.update(aad)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return b"".join((nonce, ciphertext, tag))


def encrypt_into(key: bytes, plaintext: BytesLike, aad: bytes, out: memoryview) -> None:
    """Like `encrypt`, writing nonce ‖ ciphertext ‖ tag into `out` (exactly that long)."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    out[:NONCE_SIZE] = nonce
    if _OpenSSLGCM is not None:
        _OpenSSLGCM(key).encrypt_into(nonce, plaintext, aad or None, out[NONCE_SIZE:])
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
            return _OpenSSLGCM(key).decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad or None)
        except _InvalidTag as exc:
            raise Unauthenticated("ciphertext failed authentication") from exc
    cipher = AES.new(key, AES.MODE_GCM, nonce=bytes(view[:NONCE_SIZE]))
    if aad:
        cipher.update(aad)
    try:
        return cipher.decrypt_and_verify(view[NONCE_SIZE:-TAG_SIZE], view[-TAG_SIZE:])
    except ValueError as exc:
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

    Every blob the job writes carries the sealed key in front of its ciphertext, so each
    blob is self-contained and can be moved between packs (repacking) without decryption.
    """

    public_key: bytes
    data_key: bytes = field(default_factory=lambda: secrets.token_bytes(KEY_SIZE))
    sealed: bytes = b""

    def __post_init__(self) -> None:
        self.sealed = seal_key(self.public_key, self.data_key)

    def seal(self, plaintext: BytesLike, aad: bytes, header: bytes = b"") -> bytearray:
        """sealed key ‖ header ‖ nonce ‖ ciphertext ‖ tag, built in one buffer (no copies).

        `header` is stored in clear; callers authenticate it by including it in `aad`.
        """
        prefix = self.sealed + header
        out = bytearray(len(prefix) + AEAD_OVERHEAD + len(plaintext))
        out[: len(prefix)] = prefix
        encrypt_into(self.data_key, plaintext, aad, memoryview(out)[len(prefix) :])
        return out


class Unsealer:
    """Opens blobs written by any `SealingSession`; caches each job's unsealed data key."""

    def __init__(self, private_seed: bytes) -> None:
        self._private_seed = private_seed
        self._keys: dict[bytes, bytes] = {}
        self._lock = Lock()

    def open(self, message: BytesLike, aad: bytes, header_size: int = 0) -> bytes:
        """Inverse of `SealingSession.seal`; the clear header is skipped (and covered by aad)."""
        if len(message) < SEALED_KEY_SIZE + header_size + AEAD_OVERHEAD:
            raise Unauthenticated("sealed blob too short")
        view = memoryview(message)
        sealed = bytes(view[:SEALED_KEY_SIZE])
        with self._lock:
            key = self._keys.get(sealed)
        if key is None:
            key = open_sealed_key(self._private_seed, sealed)
            with self._lock:
                self._keys[sealed] = key
        return decrypt(key, view[SEALED_KEY_SIZE + header_size :], aad)
