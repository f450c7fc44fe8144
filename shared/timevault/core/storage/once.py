"""Writing an object once: never replacing one that exists, where the location can enforce it.

Every object of a repository but the locks is written once and never changed: packs, index and
reference lists are named by the hash of their bytes, snapshots by a keyed hash of their
content. A storage that can create an object only if its name is free offers
``put_new(name, data) -> bool`` and says so with ``supports_put_new``: a local folder links the
finished temp file into place (``link`` fails on an existing name), S3 sends a conditional
``PutObject`` (``If-None-Match: *``). Elsewhere `put_once` checks first and then puts, which
keeps honest writers from replacing objects but cannot stop a racing one.

Wrappers pass the flag through from what they wrap (as with ``delete_many``).
"""

from __future__ import annotations

from timevault.core.storage.base import ObjectNotFound, Payload, Storage


def supports_put_new(storage: object) -> bool:
    """Whether `storage` creates objects exclusively (refusing to replace an existing one)."""
    return bool(getattr(storage, "supports_put_new", False))


async def put_once(storage: Storage, name: str, data: Payload) -> bool:
    """Store `data` under `name` unless an object of that name exists; never replaces it.

    Returns True when this call wrote the object, False when one was already there (for
    content-addressed names: the same content, so a repeated write is a success).
    """
    if supports_put_new(storage):
        return bool(await storage.put_new(name, data))  # type: ignore[attr-defined]
    try:
        await storage.stat(name)
    except ObjectNotFound:
        await storage.put(name, data)
        return True
    return False
