"""`gc/<id>` objects: the state of two-phase garbage collection (see `timevault.core.prune`).

``gc/<id>`` is AES-GCM (metadata key, aad ``gc``) of msgpack `GcState`, named by the BLAKE3 hash
of its stored bytes, so every rewrite has a new name. Normally exactly one exists. A prune run
that changes the state writes a new object and then removes the old ones; if it is killed in
between, the next run finds several and merges them (marks are kept, orphans keep the earliest
time they were seen). The sorted names are the repository's *generation*: a cache of the index
that recorded them knows it is current while they stay the same.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import msgspec

from timevault.core import crypto
from timevault.core.errors import RepositoryError
from timevault.core.repository.format import GcMark, GcOrphan, GcState
from timevault.core.storage import ObjectNotFound, Storage
from timevault.core.storage.once import put_once

_decoder = msgspec.msgpack.Decoder(GcState)


def encode(meta_key: bytes, state: GcState) -> tuple[str, bytes]:
    data = crypto.encrypt(meta_key, msgspec.msgpack.encode(state), b"gc")
    return crypto.content_hash(data).hex(), data


def decode(meta_key: bytes, state_id: str, data: bytes) -> GcState:
    where = f"garbage collection state {state_id[:12]}"
    if crypto.content_hash(data).hex() != state_id:
        raise RepositoryError(f"{where} does not match its name (renamed or changed)")
    try:
        return _decoder.decode(crypto.decrypt(meta_key, data, b"gc"))
    except (crypto.Unauthenticated, msgspec.DecodeError) as exc:
        raise RepositoryError(f"{where} is damaged") from exc


@dataclass
class StoredState:
    """The merged state and the names of the objects it came from."""

    state: GcState
    names: list[str] = field(default_factory=list)

    @property
    def generation(self) -> list[str]:
        return sorted(self.names)

    def pending_packs(self) -> set[str]:
        """Packs some mark took out of the index and that are not deleted yet."""
        return {pack for mark in self.state.marks for pack in mark.packs}


async def load(storage: Storage, meta_key: bytes) -> StoredState:
    """Every `gc/` object merged into one state. A damaged one stops garbage collection: what it
    would have said cannot be guessed, and guessing wrong deletes data."""
    states: list[GcState] = []
    names: list[str] = []
    async for info in storage.list("gc/"):
        state_id = info.name.removeprefix("gc/")
        try:
            states.append(decode(meta_key, state_id, await storage.get(info.name)))
        except ObjectNotFound:
            continue
        names.append(state_id)
    return StoredState(merge(states), names)


def merge(states: list[GcState]) -> GcState:
    if len(states) == 1:
        return states[0]
    marks: dict[tuple[float, tuple[str, ...]], GcMark] = {}
    orphans: dict[str, float] = {}
    for state in states:
        for mark in state.marks:
            marks.setdefault((mark.time, tuple(mark.packs)), mark)
        for orphan in state.orphans:
            orphans[orphan.pack] = min(orphan.seen, orphans.get(orphan.pack, orphan.seen))
    return GcState(
        time=max((s.time for s in states), default=0.0),
        hostname=socket.gethostname(),
        marks=sorted(marks.values(), key=lambda m: m.time),
        orphans=[GcOrphan(pack, seen) for pack, seen in sorted(orphans.items())],
        last_mark=max((s.last_mark for s in states), default=0.0),
        last_snapshots=max(states, key=lambda s: s.last_mark).last_snapshots if states else [],
    )


async def publish(storage: Storage, meta_key: bytes, stored: StoredState, state: GcState) -> StoredState:
    """Write `state` as the new current one, then remove the objects it replaces."""
    new_id, data = encode(meta_key, state)
    return await publish_encoded(storage, stored, state, new_id, data)


def next_state(state: GcState, **changes: object) -> GcState:
    """A copy of `state` stamped now, with `changes` applied."""
    return msgspec.structs.replace(state, time=time.time(), hostname=socket.gethostname(), **changes)


def precompute_generation(meta_key: bytes, state: GcState) -> tuple[list[str], str, bytes]:
    """(generation after publishing, id, bytes) of `state`, before it is written: a cache is told
    the generation it will be in sync with first (see `timevault.core.prune`)."""
    new_id, data = encode(meta_key, state)
    return [new_id], new_id, data


async def publish_encoded(storage: Storage, stored: StoredState, state: GcState, new_id: str,
                          data: bytes) -> StoredState:
    await put_once(storage, f"gc/{new_id}", data)
    for old in stored.names:
        if old != new_id:
            await storage.delete(f"gc/{old}")
    return StoredState(state, [new_id])
