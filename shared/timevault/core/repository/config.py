"""`config`: the repository's format and parameters, signed by the password holder.

The object is plaintext JSON (`ConfigFile`): the format version in the clear, so that readers
of other formats refuse it with a clear message, and the parameters as a signed msgpack body.
The signature is Ed25519 with the repository's signing key, which exists only inside the
password-wrapped key files; every reader (the services too) checks it with the verifying key
of its keys. So neither storage nor the services can change a parameter unseen, and every
number is bounds-checked before use: a hostile repository cannot make chunks tiny (a bigger,
more revealing repository) or huge (memory).
"""

from __future__ import annotations

import msgspec

from timevault.core import crypto
from timevault.core.chunker import ChunkerParams
from timevault.core.errors import ConfigError, NotARepository
from timevault.core.repository.format import (
    FORMAT_VERSION,
    ChunkerConfig,
    Config,
    ConfigFile,
    ConfigVersion,
    WriteKeys,
)

# Chunk bounds a reader accepts. Below 4 KiB a repository grows by its per-blob overhead and
# chunk sizes say more about files; above 8 MiB a chunk no longer fits the chunker's segments.
MIN_CHUNK = 4 * 1024
MAX_CHUNK = 8 * 1024 * 1024
SUPPORTED: dict[str, frozenset[str]] = {
    "compression": frozenset({"zstd"}),
    "cipher": frozenset({"aes-256-gcm"}),
    "id_hash": frozenset({"blake3-keyed"}),
    "seal": frozenset({"x25519-hkdf-sha256"}),
    "kdf": frozenset({"argon2id"}),
    "padding": frozenset({"padme"}),
    "signature": frozenset({"ed25519"}),
}
_SIGNED = b"timevault config v2\0"
_body_decoder = msgspec.msgpack.Decoder(Config)


def check_chunker(chunker: ChunkerConfig | ChunkerParams) -> list[str]:
    """What is wrong with these chunk sizes (empty: nothing)."""
    sizes = (chunker.min_size, chunker.avg_size, chunker.max_size)
    if not all(isinstance(size, int) and MIN_CHUNK <= size <= MAX_CHUNK for size in sizes):
        return [f"chunk sizes {sizes} are outside {MIN_CHUNK}..{MAX_CHUNK} bytes"]
    if not chunker.min_size <= chunker.avg_size <= chunker.max_size:
        return [f"chunk sizes {sizes} are not ordered min <= avg <= max"]
    return []


def problems(config: Config, expected_id: str | None = None) -> list[str]:
    """Every value of `config` this version cannot use (empty: the config is usable)."""
    found = []
    if config.version != FORMAT_VERSION:
        found.append(f"config says format {config.version}")
    if expected_id is not None and config.id != expected_id:
        found.append("config names another repository")
    found += check_chunker(config.chunker)
    for field, allowed in SUPPORTED.items():
        value = getattr(config, field)
        if value not in allowed:
            found.append(f"unknown {field} {value!r} (this version knows {', '.join(sorted(allowed))})")
    return found


def encode(config: Config, sign_key: bytes) -> bytes:
    body = msgspec.msgpack.encode(config)
    signature = crypto.sign(sign_key, _SIGNED + body)
    return msgspec.json.encode(ConfigFile(version=config.version, id=config.id, body=body, signature=signature))


def peek(data: bytes, location: str) -> ConfigFile:
    """The outer `config` object, before any key is known; refuses other formats clearly."""
    try:
        version = msgspec.json.decode(data, type=ConfigVersion).version
    except msgspec.DecodeError as exc:
        raise NotARepository(f"{location}: repository config is damaged") from exc
    if version == 1:
        raise NotARepository(
            f"{location}: this repository has format 1, which this version no longer reads "
            "(format 2 protects the history and hides blob sizes; back up into a new repository)"
        )
    if version != FORMAT_VERSION:
        raise NotARepository(f"{location}: unsupported repository format {version}")
    try:
        return msgspec.json.decode(data, type=ConfigFile)
    except msgspec.DecodeError as exc:
        raise NotARepository(f"{location}: repository config is damaged") from exc


def verify(outer: ConfigFile, keys: WriteKeys, location: str) -> tuple[Config | None, list[str]]:
    """Check the signature and every value: (the config, or None when unusable; problems)."""
    if not crypto.verify_signature(keys.verify_key, _SIGNED + outer.body, outer.signature):
        return None, [f"{location}: config is not signed by this repository's keys (it was changed)"]
    try:
        config = _body_decoder.decode(outer.body)
    except msgspec.DecodeError as exc:
        return None, [f"{location}: config does not decode: {exc}"]
    found = problems(config, keys.repo_id)
    if outer.id != config.id or outer.version != config.version:
        found.append("config's clear fields differ from its signed ones")
    return (None if found else config), [f"{location}: {problem}" for problem in found]


def require(outer: ConfigFile, keys: WriteKeys, location: str) -> Config:
    """`verify`, raising ConfigError on any problem (for backups and everything that writes)."""
    config, found = verify(outer, keys, location)
    if config is None:
        raise ConfigError("; ".join(found) + " — refusing to use this repository (run `timevault repo check`)")
    return config
