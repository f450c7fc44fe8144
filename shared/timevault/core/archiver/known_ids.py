"""Which blobs a repository holds, kept on this machine between backups (`<cache>/<repo id>.ids`).

A backup that deduplicates in process (`timevault repo backup`) needs every blob id the index
files list. Reading them all again each time cost more than anything else a small incremental
backup does before its walk: at 1,000,000 files, 186 index files, a million ids through the
Bloom filter and into sorted runs, ~2.5 s of one core. The set a backup ends with (what it found
stored, and what it stored itself) is written here once its blobs are all durable; the next
backup reads it back and reads only the index files that are new since.

A cache is used only when it cannot claim a blob that is gone:

- blobs leave a repository only through prune, and prune rewrites `gc/` (the repository's
  *generation*, `Repository.gc_generation`) before it deletes anything: a cache written under
  another generation is not used;
- every index file it was built from must still be there, and no index file new since may
  supersede one of them (a compaction, a rebuilt index): else it is not used;
- its trailer is sealed with the metadata key and carries a keyed hash of the body: a cache
  changed by anyone without the key, or cut short, is not used.

A cache that is not used costs the full read, as before, and is replaced after the backup.
It holds blob ids only (keyed hashes of content) and the names of index files. A repository of
fewer than KEEP_FROM blobs gets none: reading its index files is quicker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct

import msgspec

from timevault.core import crypto
from timevault.core.errors import ObjectNotFound
from timevault.core.repository.idruns import DiskIdSet
from timevault.core.repository.index import add_index_files, index_file_ids, load_stored_ids
from timevault.core.repository.repo import Repository

log = logging.getLogger(__name__)
VERSION = 1
# Fewer ids than this are not kept: reading them from the index files (~2.5 µs an id) costs less
# than writing and reading back the set's fixed part (the 8 MiB filter, hashed).
KEEP_FROM = 10_000
# Runs kept before a save merges them into one (each backup adds a run or two; lookups read
# each run's bucket).
MAX_RUNS = 24
_LENGTH = struct.Struct(">I")
_AAD = b"timevault stored ids cache"


class _Trailer(msgspec.Struct, array_like=True):
    """What the body is: the ids of which index files, under which generation, in which runs."""

    version: int
    repo_id: str
    generation: list[str]
    index_files: list[str]
    runs: list[int]
    body_size: int
    body_hash: bytes


class StoredIds:
    """The repository's blob ids for one backup (`ids`), and how to keep them for the next."""

    def __init__(
        self, repo: Repository, path: str | None, ids: DiskIdSet, generation: list[str], index_files: set[str]
    ) -> None:
        self.ids = ids
        self._repo = repo
        self._path = path
        self._generation = generation
        self._index_files = index_files
        self.reused = False  # whether a kept set was used (for tests and benchmarks)

    @staticmethod
    async def load(repo: Repository, cache_dir: str | None, spill_dir: str | None) -> StoredIds:
        """The ids, from the kept set plus the index files new since, or from every index file."""
        path = os.path.join(cache_dir, f"{repo.config.id}.ids") if cache_dir else None
        generation: list[str] = []
        if path is not None:
            # The generation first: a prune that marks after this moment changes it, and the
            # set saved after this backup then is not used.
            generation = await repo.gc_generation()
            kept = await _load_kept(repo, path, generation, spill_dir)
            if kept is not None:
                return kept
        ids, files = await load_stored_ids(repo.storage, repo.write_keys.meta_key, lambda: DiskIdSet(spill_dir))
        return StoredIds(repo, path, ids, generation, files)

    def save(self, written_index_files: list[str]) -> None:
        """Keep the set for the next backup. Call only once every blob in it is durable and
        indexed (`written_index_files`: the index files this backup wrote). Never fails a
        backup: a set that cannot be written is only read again next time."""
        if self._path is None:
            return
        temp = f"{self._path}.tmp"
        try:
            if len(self.ids) < KEEP_FROM:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path)  # one kept when there were more is of no use now
                return
            if self.ids.run_count > MAX_RUNS:
                self.ids.merged()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                hasher = _body_hasher(self._repo)
                size = 0

                def write(piece: bytes | bytearray | memoryview) -> None:
                    nonlocal size
                    hasher.update(piece)
                    size += out.write(piece)

                runs = self.ids.write_to(write)
                trailer = _Trailer(
                    VERSION,
                    self._repo.config.id,
                    self._generation,
                    sorted(self._index_files | set(written_index_files)),
                    runs,
                    size,
                    hasher.digest(),
                )
                sealed = self._repo.encrypt_meta(msgspec.msgpack.encode(trailer), _AAD)
                out.write(sealed)
                out.write(_LENGTH.pack(len(sealed)))
            os.replace(temp, self._path)
        except (OSError, ValueError) as exc:
            log.warning("the repository's blob ids are not kept for the next backup: %s", exc)
            with contextlib.suppress(OSError):
                os.unlink(temp)


def _body_hasher(repo: Repository) -> crypto.KeyedHasher:
    """The keyed hash of a kept set's body (a key of its own, from the metadata key)."""
    return crypto.keyed_hasher(crypto.subkey(repo.write_keys.meta_key, "stored ids cache"))


async def _load_kept(repo: Repository, path: str, generation: list[str], spill_dir: str | None) -> StoredIds | None:
    """The kept set if it may be used (see the module's description), else None."""
    try:
        kept = await asyncio.to_thread(_read_kept, repo, path, generation, spill_dir)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, crypto.Unauthenticated, msgspec.DecodeError) as exc:
        log.info("the kept blob ids are not used: %s", exc)
        return None
    if kept is None:
        return None
    ids, covered = kept
    try:
        now = await index_file_ids(repo.storage)
        if not covered <= now:
            ids.close()  # an index file it was built from is gone: prune or a rebuilt index
            return None
        try:
            loaded, superseded = await add_index_files(
                repo.storage, repo.write_keys.meta_key, ids, sorted(now - covered)
            )
        except ObjectNotFound:  # a new index file gone meanwhile (a compaction): read them all
            ids.close()
            return None
        if superseded & (covered | loaded):
            ids.close()
            return None
    except BaseException:
        ids.close()
        raise
    stored = StoredIds(repo, path, ids, generation, covered | loaded)
    stored.reused = True
    return stored


def _read_kept(
    repo: Repository, path: str, generation: list[str], spill_dir: str | None
) -> tuple[DiskIdSet, set[str]] | None:
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        if end < _LENGTH.size:
            raise ValueError("cut short")
        f.seek(end - _LENGTH.size)
        (sealed_size,) = _LENGTH.unpack(f.read(_LENGTH.size))
        if sealed_size > end - _LENGTH.size:
            raise ValueError("cut short")
        f.seek(end - _LENGTH.size - sealed_size)
        trailer = msgspec.msgpack.decode(repo.decrypt_meta(f.read(sealed_size), _AAD), type=_Trailer)
        if trailer.version != VERSION or trailer.repo_id != repo.config.id or trailer.generation != generation:
            return None
        if trailer.body_size != end - _LENGTH.size - sealed_size:
            raise ValueError("not the size it was written with")
        f.seek(0)
        hasher = _body_hasher(repo)

        def read(n: int) -> bytes:
            piece = f.read(n)
            hasher.update(piece)
            return piece

        ids = DiskIdSet.read_from(read, trailer.runs, spill_dir)
        if f.tell() != trailer.body_size or hasher.digest() != trailer.body_hash:
            ids.close()
            raise ValueError("the body is not the one its trailer describes")
        return ids, set(trailer.index_files)
