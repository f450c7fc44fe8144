"""The Space's SQLite store: accounts, device tokens and the objects of every repository.

The object bytes live in the storage location (a folder or S3) under an immutable, random
*version* name; this database says which version is the live object of a name, which versions are
in an account's trash, and how many bytes each account uses. So every change of state (a write
becoming visible, a delete, a restore) is one SQLite transaction, and no bytes are ever moved.

Object states: ``pending`` (being written), ``live``, ``trash`` (deleted, restorable) and
``purge`` (its bytes are being removed). An account's ``used`` is the sum of its pending, live
and trashed versions: the quota bounds what the Space really holds for the account, trash
included, so a compromised TimeVault cannot grow an account without bound by churning objects.

Both the server and the ``timevault space user …`` commands open this file (WAL mode), so a
quota or account change takes effect on a running server with its next request. Every method is
synchronous and short; the server calls them from one dedicated thread (`DBThread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password TEXT NOT NULL,
    quota INTEGER,
    used INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    hash BLOB NOT NULL UNIQUE,
    client TEXT NOT NULL,
    created REAL NOT NULL,
    last_used REAL
);
CREATE TABLE IF NOT EXISTS objects (
    version TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    repo TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    segment_size INTEGER NOT NULL,
    segments INTEGER NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    deleted REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS objects_live ON objects (account, repo, name) WHERE state = 'live';
CREATE INDEX IF NOT EXISTS objects_account_state ON objects (account, state, repo);
CREATE INDEX IF NOT EXISTS objects_state ON objects (state, deleted);
"""

LOCKS_PREFIX = "locks/"
"""Lock objects are rewritten every few minutes and removed after each backup: they are the one
kind of object that is replaced and deleted for good, without a trip through the trash."""


class AccountExists(Exception):
    """An account with that name exists already."""


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    password: str
    quota: int | None
    used: int
    created: float


@dataclass(frozen=True, slots=True)
class TokenOwner:
    token_id: str
    account_id: str
    account_name: str
    last_used: float | None


@dataclass(frozen=True, slots=True)
class ObjectRow:
    version: str
    account: str
    repo: str
    name: str
    size: int
    segment_size: int
    segments: int
    state: str
    created: float
    deleted: float | None


@dataclass(frozen=True, slots=True)
class RepoUsage:
    name: str
    objects: int
    size: int
    trash_objects: int
    trash_size: int


@dataclass(frozen=True, slots=True)
class PutRefused:
    """`begin_put` could not reserve the bytes: the account's usage and quota at that moment."""

    used: int
    quota: int | None
    account_missing: bool = False


_OBJECT_COLUMNS = "version, account, repo, name, size, segment_size, segments, state, created, deleted"


def new_id(nbytes: int = 12) -> str:
    return secrets.token_hex(nbytes)


def is_lock(name: str) -> bool:
    return name.startswith(LOCKS_PREFIX)


class SpaceDB:
    """One SQLite connection to ``<data-dir>/space.db``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Password hashes and token hashes: private before SQLite opens it.
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        self.path = path
        self.conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=10000")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so that reads in it stay true."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # --- accounts --------------------------------------------------------------------------

    def add_account(self, name: str, password_hash: str, quota: int | None) -> Account:
        account = Account(new_id(), name, password_hash, quota, 0, time.time())
        try:
            with self.write() as conn:
                conn.execute(
                    "INSERT INTO accounts (id, name, password, quota, used, created) VALUES (?, ?, ?, ?, 0, ?)",
                    (account.id, name, password_hash, quota, account.created),
                )
        except sqlite3.IntegrityError as exc:
            raise AccountExists(f"an account named {name!r} exists already") from exc
        return account

    def account_by_name(self, name: str) -> Account | None:
        row = self.conn.execute(
            "SELECT id, name, password, quota, used, created FROM accounts WHERE name = ?", (name,)
        ).fetchone()
        return Account(*row) if row else None

    def account(self, account_id: str) -> Account | None:
        row = self.conn.execute(
            "SELECT id, name, password, quota, used, created FROM accounts WHERE id = ?", (account_id,)
        ).fetchone()
        return Account(*row) if row else None

    def list_accounts(self) -> list[tuple[Account, int]]:
        """Every account with its number of signed-in devices, by name."""
        rows = self.conn.execute(
            "SELECT a.id, a.name, a.password, a.quota, a.used, a.created, "
            "(SELECT COUNT(*) FROM tokens t WHERE t.account = a.id) FROM accounts a ORDER BY a.name"
        ).fetchall()
        return [(Account(*row[:6]), int(row[6])) for row in rows]

    def remove_account(self, name: str) -> bool:
        """Remove the account and its devices; its objects are queued for purging."""
        with self.write() as conn:
            row = conn.execute("SELECT id FROM accounts WHERE name = ?", (name,)).fetchone()
            if row is None:
                return False
            conn.execute("UPDATE objects SET state = 'purge' WHERE account = ? AND state != 'purge'", row)
            conn.execute("DELETE FROM tokens WHERE account = ?", row)
            conn.execute("DELETE FROM accounts WHERE id = ?", row)
        return True

    def set_quota(self, name: str, quota: int | None) -> bool:
        with self.write() as conn:
            cursor = conn.execute("UPDATE accounts SET quota = ? WHERE name = ?", (quota, name))
        return cursor.rowcount == 1

    def set_password(self, name: str, password_hash: str) -> bool:
        with self.write() as conn:
            cursor = conn.execute("UPDATE accounts SET password = ? WHERE name = ?", (password_hash, name))
        return cursor.rowcount == 1

    # --- device tokens ---------------------------------------------------------------------

    def add_token(self, account_id: str, token_hash: bytes, client: str) -> str:
        token_id = new_id(8)
        with self.write() as conn:
            conn.execute(
                "INSERT INTO tokens (id, account, hash, client, created) VALUES (?, ?, ?, ?, ?)",
                (token_id, account_id, token_hash, client, time.time()),
            )
        return token_id

    def token_owner(self, token_hash: bytes) -> TokenOwner | None:
        row = self.conn.execute(
            "SELECT t.id, a.id, a.name, t.last_used FROM tokens t JOIN accounts a ON a.id = t.account "
            "WHERE t.hash = ?",
            (token_hash,),
        ).fetchone()
        return TokenOwner(*row) if row else None

    def touch_token(self, token_id: str, when: float) -> None:
        with self.write() as conn:
            conn.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (when, token_id))

    def list_tokens(self, account_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT id, client, created, last_used FROM tokens WHERE account = ? ORDER BY created",
            (account_id,),
        ).fetchall()
        return [{"id": r[0], "client": r[1], "created": r[2], "last_used": r[3]} for r in rows]

    def delete_token(self, account_id: str, token_id: str) -> bool:
        with self.write() as conn:
            cursor = conn.execute("DELETE FROM tokens WHERE id = ? AND account = ?", (token_id, account_id))
        return cursor.rowcount == 1

    def delete_token_hash(self, token_hash: bytes) -> bool:
        with self.write() as conn:
            cursor = conn.execute("DELETE FROM tokens WHERE hash = ?", (token_hash,))
        return cursor.rowcount == 1

    # --- writing objects -------------------------------------------------------------------

    def begin_put(self, row: ObjectRow) -> PutRefused | None:
        """Reserve `row.size` bytes of the account's quota and record the pending version.

        One transaction: the check and the reservation cannot be split by another writer, so
        concurrent writes never take an account past its quota.
        """
        with self.write() as conn:
            cursor = conn.execute(
                "UPDATE accounts SET used = used + ? WHERE id = ? AND (quota IS NULL OR used + ? <= quota)",
                (row.size, row.account, row.size),
            )
            if cursor.rowcount != 1:
                found = conn.execute("SELECT used, quota FROM accounts WHERE id = ?", (row.account,)).fetchone()
                if found is None:
                    return PutRefused(0, None, account_missing=True)
                return PutRefused(int(found[0]), found[1])
            conn.execute(
                f"INSERT INTO objects ({_OBJECT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, NULL)",
                (row.version, row.account, row.repo, row.name, row.size, row.segment_size, row.segments,
                 row.created),
            )
        return None

    def abort_put(self, version: str) -> None:
        """Drop a pending version (its write failed) and give its bytes back."""
        with self.write() as conn:
            self._to_purge(conn, ("version = ? AND state = 'pending'", (version,)))

    def finish_put(self, version: str, identical_to: str | None = None,
                   exclusive: bool = False) -> tuple[list[str], bool]:
        """Make a pending version the live object; returns the versions whose bytes to remove now,
        and whether an `exclusive` write found the name taken (it then stored nothing).

        The version it replaces goes to the trash, except a lock (removed) or, when
        `identical_to` is still the live version, the new version itself (a repeated write of
        the same bytes keeps the old copy and no trash entry).
        """
        with self.write() as conn:
            new = self._object(conn, "version = ?", (version,))
            if new is None or new.state != "pending":
                return [], False  # the account was removed meanwhile: the purge queue has it
            old = self._object(conn, "account = ? AND repo = ? AND name = ? AND state = 'live'",
                               (new.account, new.repo, new.name))
            if old is not None and exclusive:
                return self._to_purge(conn, ("version = ?", (version,))), True
            if old is not None and old.version == identical_to:
                return self._to_purge(conn, ("version = ?", (version,))), False
            purged: list[str] = []
            if old is not None:
                if is_lock(old.name):
                    purged = self._to_purge(conn, ("version = ?", (old.version,)))
                else:
                    conn.execute("UPDATE objects SET state = 'trash', deleted = ? WHERE version = ?",
                                 (time.time(), old.version))
            conn.execute("UPDATE objects SET state = 'live' WHERE version = ?", (version,))
        return purged, False

    # --- reading objects -------------------------------------------------------------------

    def live_object(self, account: str, repo: str, name: str) -> ObjectRow | None:
        return self._object(self.conn, "account = ? AND repo = ? AND name = ? AND state = 'live'",
                            (account, repo, name))

    def list_live(self, account: str, repo: str, prefix: str, after: str, limit: int) -> list[tuple[str, int]]:
        """Live objects whose name starts with `prefix`, by name, after `after` (keyset paging)."""
        # Object names are ASCII below DEL, so prefix..prefix+DEL is exactly the prefix range.
        low = max(prefix, after)
        rows = self.conn.execute(
            "SELECT name, size FROM objects WHERE account = ? AND repo = ? AND state = 'live' "
            "AND name >= ? AND name < ? AND name > ? ORDER BY name LIMIT ?",
            (account, repo, low, prefix + "\x7f", after, limit),
        ).fetchall()
        return [(str(name), int(size)) for name, size in rows]

    # --- deleting, trash -------------------------------------------------------------------

    def delete_objects(self, account: str, repo: str, names: list[str]) -> list[str]:
        """Move the live objects to the trash (locks: remove); returns versions to purge now."""
        now = time.time()
        purged: list[str] = []
        with self.write() as conn:
            for name in names:
                old = self._object(conn, "account = ? AND repo = ? AND name = ? AND state = 'live'",
                                   (account, repo, name))
                if old is None:
                    continue
                if is_lock(name):
                    purged += self._to_purge(conn, ("version = ?", (old.version,)))
                else:
                    conn.execute("UPDATE objects SET state = 'trash', deleted = ? WHERE version = ?",
                                 (now, old.version))
        return purged

    def usage(self, account: str) -> tuple[int, int | None]:
        row = self.conn.execute("SELECT used, quota FROM accounts WHERE id = ?", (account,)).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    def repo_usage(self, account: str) -> list[RepoUsage]:
        rows = self.conn.execute(
            "SELECT repo, "
            "SUM(state = 'live'), COALESCE(SUM(CASE WHEN state = 'live' THEN size END), 0), "
            "SUM(state = 'trash'), COALESCE(SUM(CASE WHEN state = 'trash' THEN size END), 0) "
            "FROM objects WHERE account = ? AND state IN ('live', 'trash') GROUP BY repo ORDER BY repo",
            (account,),
        ).fetchall()
        return [RepoUsage(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]

    def list_trash(self, account: str, limit: int, offset: int) -> tuple[list[ObjectRow], int]:
        """A page of the trash, newest deletion first, and the number of trashed objects."""
        rows = self.conn.execute(
            f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE account = ? AND state = 'trash' "
            "ORDER BY deleted DESC, version LIMIT ? OFFSET ?",
            (account, limit, offset),
        ).fetchall()
        total = self.conn.execute(
            "SELECT COUNT(*) FROM objects WHERE account = ? AND state = 'trash'", (account,)
        ).fetchone()[0]
        return [ObjectRow(*row) for row in rows], int(total)

    def restore_trash(self, account: str, versions: list[str]) -> int:
        """Make trashed versions live again; a live object of the same name swaps into the trash.

        Among several versions of one name restored together, the one deleted last ends up live
        (they are restored in the order they were deleted).
        """
        restored = 0
        now = time.time()
        with self.write() as conn:
            rows = [self._object(conn, "version = ? AND account = ? AND state = 'trash'", (version, account))
                    for version in dict.fromkeys(versions)]
            for row in sorted((r for r in rows if r is not None), key=lambda r: (r.deleted or 0.0, r.version)):
                version = row.version
                conn.execute(
                    "UPDATE objects SET state = 'trash', deleted = ? "
                    "WHERE account = ? AND repo = ? AND name = ? AND state = 'live'",
                    (now, account, row.repo, row.name),
                )
                conn.execute("UPDATE objects SET state = 'live', deleted = NULL WHERE version = ?", (version,))
                restored += 1
        return restored

    def empty_trash(self, account: str, versions: list[str] | None) -> list[str]:
        """Remove trashed versions for good (all of the account's when `versions` is None)."""
        with self.write() as conn:
            if versions is None:
                return self._to_purge(conn, ("account = ? AND state = 'trash'", (account,)))
            purged: list[str] = []
            for version in versions:
                purged += self._to_purge(conn, ("version = ? AND account = ? AND state = 'trash'",
                                                (version, account)))
            return purged

    def expire_trash(self, deleted_before: float) -> list[str]:
        with self.write() as conn:
            return self._to_purge(conn, ("state = 'trash' AND deleted < ?", (deleted_before,)))

    def abandon_pending(self, created_before: float) -> list[str]:
        """Pending versions of writes that a crash or restart interrupted."""
        with self.write() as conn:
            return self._to_purge(conn, ("state = 'pending' AND created < ?", (created_before,)))

    def purge_queue(self, limit: int) -> list[ObjectRow]:
        rows = self.conn.execute(
            f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE state = 'purge' LIMIT ?", (limit,)
        ).fetchall()
        return [ObjectRow(*row) for row in rows]

    def object_version(self, version: str) -> ObjectRow | None:
        return self._object(self.conn, "version = ?", (version,))

    def forget(self, versions: list[str]) -> None:
        """Drop the rows of purged versions (their bytes are gone)."""
        with self.write() as conn:
            conn.executemany("DELETE FROM objects WHERE version = ? AND state = 'purge'",
                             [(v,) for v in versions])

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _object(conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> ObjectRow | None:
        row = conn.execute(f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE {where}", args).fetchone()
        return ObjectRow(*row) if row else None

    @staticmethod
    def _to_purge(conn: sqlite3.Connection, selector: tuple[str, tuple[Any, ...]]) -> list[str]:
        """Mark the selected versions for purging and give their bytes back to their accounts."""
        where, args = selector
        rows = conn.execute(f"SELECT version, account, size FROM objects WHERE {where} AND state != 'purge'",
                            args).fetchall()
        for version, account, size in rows:
            conn.execute("UPDATE objects SET state = 'purge' WHERE version = ?", (version,))
            conn.execute("UPDATE accounts SET used = MAX(0, used - ?) WHERE id = ?", (size, account))
        return [str(row[0]) for row in rows]


class DBThread:
    """Runs `SpaceDB` calls in one dedicated thread: short, serialised, off the event loop."""

    def __init__(self, db: SpaceDB) -> None:
        self.db = db
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="space-db")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.db.close()
