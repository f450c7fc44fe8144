"""The catalog's SQLite store (aiosqlite, WAL). Only the catalog service writes it.

Rows keep their wire Struct as JSON in a ``data`` column plus the few columns that queries
filter on, so adding a field to a Struct needs no migration.

Every write happens inside `CatalogDB.transaction()`: one writer at a time (so a check and the
write that depends on it are atomic), committed when the block ends, rolled back when it
raises. The write methods refuse to run outside one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite
import msgspec

from timevault.proto.jobs import Job
from timevault.proto.plans import Location, PlanEvent, Retention, Schedule, SnapshotInfo

SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    sources TEXT NOT NULL,
    schedule TEXT NOT NULL,
    location TEXT NOT NULL,
    write_keys BLOB NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    deleting INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    resumed_at TEXT,
    last_slot TEXT,
    total_size INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    heartbeat REAL NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_plan_status ON jobs (plan_id, status);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS snapshots (
    plan_id TEXT NOT NULL,
    id TEXT NOT NULL,
    started_at TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (plan_id, id)
);
CREATE TABLE IF NOT EXISTS chunks (
    plan_id TEXT NOT NULL,
    id BLOB NOT NULL,
    pack TEXT NOT NULL,
    length INTEGER NOT NULL,
    PRIMARY KEY (plan_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_plan ON events (plan_id, seq);
CREATE TABLE IF NOT EXISTS lifecycle (
    plan_id TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS packs (
    plan_id TEXT NOT NULL,
    id TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (plan_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS space_signins (
    space TEXT PRIMARY KEY,
    ca TEXT,
    account TEXT NOT NULL,
    token TEXT NOT NULL,
    signed_in_at TEXT NOT NULL
);
"""


class LifecycleRow(msgspec.Struct, kw_only=True):
    """A plan's retention settings and what the catalog knows of its repository's state.

    Kept apart from the ``plans`` row (and as JSON) so that adding a setting needs no migration.
    A plan created before this table existed has no row: it keeps everything (`Retention`
    ``none``) and its chunk index is reconciled before its next backup (`generation` unknown).
    """

    retention: Retention = msgspec.field(default_factory=lambda: Retention(policy="none"))
    thin_when_full: bool = False
    generation: list[str] | None = None
    """The repository's generation the chunk index matches; None: unknown (reconcile first)."""
    last_prune_at: datetime | None = None


class PlanRow(msgspec.Struct, kw_only=True):
    id: str
    name: str
    sources: list[str]
    schedule: Schedule
    location: Location
    write_keys: bytes
    paused: bool
    deleting: bool
    created_at: datetime
    updated_at: datetime
    resumed_at: datetime | None
    last_slot: datetime | None
    total_size: int


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# The database whose transaction the running task is in (None: not in one).
_current: ContextVar[CatalogDB | None] = ContextVar("catalog_transaction", default=None)


class SpaceSignIn(NamedTuple):
    """This TimeVault's sign-in to one TimeVault Space: its device token (secret, like write keys)."""

    space: str
    ca: str | None
    account: str
    token: str


class CatalogDB:
    """Typed access to the catalog tables; writes only inside `transaction()`."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._writer = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Hold the write lock for the block; commit at its end, roll back if it raises.

        Not reentrant: a block must not open another (it would wait for itself).
        """
        if _current.get() is self:
            raise RuntimeError("catalog transactions do not nest")
        async with self._writer:
            token = _current.set(self)
            try:
                yield
            except BaseException:
                await self._conn.rollback()
                raise
            else:
                await self._conn.commit()
            finally:
                _current.reset(token)

    def _writing(self) -> aiosqlite.Connection:
        if _current.get() is not self:
            raise RuntimeError("catalog writes need a transaction (CatalogDB.transaction)")
        return self._conn

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> CatalogDB:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The DB holds write keys: create it private before SQLite opens it.
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        conn = await aiosqlite.connect(path)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.executescript(SCHEMA)
        await conn.commit()
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()

    # --- plans ---------------------------------------------------------------------------

    _PLAN_COLS = ("id, name, sources, schedule, location, write_keys, paused, deleting, created_at, "
                  "updated_at, resumed_at, last_slot, total_size")

    def _plan(self, row: aiosqlite.Row) -> PlanRow:
        return PlanRow(
            id=row[0], name=row[1], sources=msgspec.json.decode(row[2], type=list[str]),
            schedule=msgspec.json.decode(row[3], type=Schedule),
            location=msgspec.json.decode(row[4], type=Location), write_keys=bytes(row[5]),
            paused=bool(row[6]), deleting=bool(row[7]), created_at=datetime.fromisoformat(row[8]),
            updated_at=datetime.fromisoformat(row[9]), resumed_at=_dt(row[10]), last_slot=_dt(row[11]),
            total_size=row[12],
        )

    async def insert_plan(self, plan: PlanRow) -> None:
        conn = self._writing()
        await conn.execute(
            f"INSERT INTO plans ({self._PLAN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (plan.id, plan.name, msgspec.json.encode(plan.sources), msgspec.json.encode(plan.schedule),
             msgspec.json.encode(plan.location), plan.write_keys, int(plan.paused), int(plan.deleting),
             _iso(plan.created_at), _iso(plan.updated_at), _iso(plan.resumed_at), _iso(plan.last_slot),
             plan.total_size),
        )

    async def save_plan(self, plan: PlanRow) -> None:
        conn = self._writing()
        await conn.execute(
            "UPDATE plans SET sources=?, schedule=?, paused=?, deleting=?, updated_at=?, resumed_at=?, "
            "last_slot=? WHERE id=?",
            (msgspec.json.encode(plan.sources), msgspec.json.encode(plan.schedule), int(plan.paused),
             int(plan.deleting), _iso(plan.updated_at), _iso(plan.resumed_at), _iso(plan.last_slot), plan.id),
        )

    async def get_plan(self, ref: str) -> PlanRow | None:
        """By id first, then by name (names are never ``p_`` + 16 hex, ids always are)."""
        for column in ("id", "name"):
            sql = f"SELECT {self._PLAN_COLS} FROM plans WHERE {column}=?"
            async with self._conn.execute(sql, (ref,)) as cur:
                row = await cur.fetchone()
            if row is not None:
                return self._plan(row)
        return None

    async def list_plans(self) -> list[PlanRow]:
        async with self._conn.execute(f"SELECT {self._PLAN_COLS} FROM plans ORDER BY name") as cur:
            return [self._plan(row) for row in await cur.fetchall()]

    async def claim_slot(self, plan_id: str, slot: datetime) -> bool:
        """Compare-and-set: record `slot` as fired unless it (or a later one) already was."""
        conn = self._writing()
        cur = await conn.execute(
            "UPDATE plans SET last_slot=? WHERE id=? AND paused=0 AND deleting=0 "
            "AND (last_slot IS NULL OR last_slot < ?)",
            (_iso(slot), plan_id, _iso(slot)),
        )
        return cur.rowcount == 1

    async def add_total_size(self, plan_id: str, delta: int) -> None:
        conn = self._writing()
        await conn.execute("UPDATE plans SET total_size = total_size + ? WHERE id=?", (delta, plan_id))

    async def set_total_size(self, plan_id: str, size: int) -> None:
        conn = self._writing()
        await conn.execute("UPDATE plans SET total_size = ? WHERE id=?", (size, plan_id))

    async def delete_plan_rows(self, plan_id: str) -> None:
        conn = self._writing()
        for table, column in (("chunks", "plan_id"), ("packs", "plan_id"), ("snapshots", "plan_id"),
                              ("jobs", "plan_id"), ("events", "plan_id"), ("lifecycle", "plan_id"),
                              ("plans", "id")):
            await conn.execute(f"DELETE FROM {table} WHERE {column}=?", (plan_id,))

    # --- lifecycle -------------------------------------------------------------------------

    async def get_lifecycle(self, plan_id: str) -> LifecycleRow:
        async with self._conn.execute("SELECT data FROM lifecycle WHERE plan_id=?", (plan_id,)) as cur:
            row = await cur.fetchone()
        return LifecycleRow() if row is None else msgspec.json.decode(row[0], type=LifecycleRow)

    async def save_lifecycle(self, plan_id: str, lifecycle: LifecycleRow) -> None:
        conn = self._writing()
        await conn.execute("INSERT OR REPLACE INTO lifecycle (plan_id, data) VALUES (?,?)",
                           (plan_id, msgspec.json.encode(lifecycle)))

    # --- jobs ----------------------------------------------------------------------------

    async def save_job(self, job: Job, *, heartbeat: float | None = None,
                       cancel_requested: bool | None = None) -> None:
        conn = self._writing()
        await conn.execute(
            "INSERT INTO jobs (id, plan_id, kind, status, created_at, data) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET status=excluded.status, data=excluded.data",
            (job.id, job.plan_id, job.kind, job.status, _iso(job.created_at), msgspec.json.encode(job)),
        )
        if heartbeat is not None:
            await conn.execute("UPDATE jobs SET heartbeat=? WHERE id=?", (heartbeat, job.id))
        if cancel_requested is not None:
            await conn.execute("UPDATE jobs SET cancel_requested=? WHERE id=?",
                               (int(cancel_requested), job.id))

    async def get_job(self, job_id: str) -> tuple[Job, float, bool] | None:
        async with self._conn.execute(
            "SELECT data, heartbeat, cancel_requested FROM jobs WHERE id=?", (job_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return msgspec.json.decode(row[0], type=Job), row[1], bool(row[2])

    async def list_jobs(self, *, plan_id: str | None = None, statuses: tuple[str, ...] = (),
                        kind: str | None = None, limit: int = 100) -> list[Job]:
        where: list[str] = []
        params: list[str | int] = []
        if plan_id is not None:
            where.append("plan_id=?")
            params.append(plan_id)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params.extend(statuses)
        if kind is not None:
            where.append("kind=?")
            params.append(kind)
        sql = "SELECT data FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC LIMIT ?"
        async with self._conn.execute(sql, (*params, limit)) as cur:
            return [msgspec.json.decode(row[0], type=Job) for row in await cur.fetchall()]

    async def job_figures(self, buckets: tuple[float, ...]) -> list[tuple[Any, ...]]:
        """Per (kind, status): count, bytes done, bytes added, duration sum and count, then one
        cumulative count per bucket bound. One pass over the jobs, in SQL (for ``/metrics``)."""
        duration = ("(julianday(json_extract(data, '$.finished_at')) - "
                    "julianday(json_extract(data, '$.started_at'))) * 86400.0")
        bucket_cols = "".join(f", SUM(CASE WHEN d <= {float(b)!r} THEN 1 ELSE 0 END)" for b in buckets)
        sql = (f"SELECT kind, status, COUNT(*), COALESCE(SUM(done), 0), COALESCE(SUM(added), 0), "
               f"COALESCE(SUM(d), 0.0), COUNT(d){bucket_cols} FROM ("
               f"SELECT kind, status, json_extract(data, '$.bytes_done') AS done, "
               f"json_extract(data, '$.added_size') AS added, {duration} AS d FROM jobs) "
               f"GROUP BY kind, status ORDER BY kind, status")
        async with self._conn.execute(sql) as cur:
            return [tuple(row) for row in await cur.fetchall()]

    async def plan_count(self) -> int:
        async with self._conn.execute("SELECT COUNT(*) FROM plans WHERE deleting=0") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def stale_jobs(self, status: str, before: float, *, by_heartbeat: bool) -> list[tuple[Job, bool]]:
        column = "heartbeat" if by_heartbeat else "strftime('%s', created_at)"
        async with self._conn.execute(
            f"SELECT data, cancel_requested FROM jobs WHERE status=? AND {column} < ?", (status, before)
        ) as cur:
            return [(msgspec.json.decode(r[0], type=Job), bool(r[1])) for r in await cur.fetchall()]

    async def touch_job(self, job: Job, heartbeat: float) -> None:
        conn = self._writing()
        await conn.execute("UPDATE jobs SET data=?, heartbeat=? WHERE id=?",
                           (msgspec.json.encode(job), heartbeat, job.id))

    # --- snapshots -----------------------------------------------------------------------

    async def save_snapshot(self, plan_id: str, snap: SnapshotInfo) -> None:
        conn = self._writing()
        await conn.execute(
            "INSERT OR REPLACE INTO snapshots (plan_id, id, started_at, data) VALUES (?,?,?,?)",
            (plan_id, snap.id, _iso(snap.started_at), msgspec.json.encode(snap)),
        )

    async def delete_snapshot(self, plan_id: str, snapshot_id: str) -> None:
        conn = self._writing()
        await conn.execute("DELETE FROM snapshots WHERE plan_id=? AND id=?", (plan_id, snapshot_id))

    async def list_snapshots(self, plan_id: str) -> list[SnapshotInfo]:
        async with self._conn.execute(
            "SELECT data FROM snapshots WHERE plan_id=? ORDER BY started_at, id", (plan_id,)
        ) as cur:
            return [msgspec.json.decode(row[0], type=SnapshotInfo) for row in await cur.fetchall()]

    # --- chunks --------------------------------------------------------------------------

    async def known_chunks(self, plan_id: str, ids: list[bytes]) -> set[bytes]:
        known: set[bytes] = set()
        for start in range(0, len(ids), 500):  # stay below SQLite's bound-parameter limit
            batch = ids[start : start + 500]
            async with self._conn.execute(
                f"SELECT id FROM chunks WHERE plan_id=? AND id IN ({','.join('?' * len(batch))})",
                (plan_id, *batch),
            ) as cur:
                known.update(bytes(row[0]) for row in await cur.fetchall())
        return known

    async def add_chunks(self, plan_id: str, chunks: list[tuple[bytes, str, int]]) -> int:
        conn = self._writing()
        before = conn.total_changes
        await conn.executemany(
            "INSERT OR IGNORE INTO chunks (plan_id, id, pack, length) VALUES (?,?,?,?)",
            [(plan_id, cid, pack, length) for cid, pack, length in chunks],
        )
        return conn.total_changes - before

    async def add_packs(self, plan_id: str, packs: list[tuple[str, int]]) -> int:
        """Record packs; returns the bytes of those that were new (a repeated report adds 0)."""
        conn = self._writing()
        added = 0
        for pack_id, size in packs:
            cur = await conn.execute("INSERT OR IGNORE INTO packs (plan_id, id, size) VALUES (?,?,?)",
                                     (plan_id, pack_id, size))
            if cur.rowcount == 1:
                added += size
        return added

    async def drop_packs(self, plan_id: str, pack_ids: list[str]) -> int:
        """Forget packs and every chunk row that points into them; returns the bytes dropped."""
        conn = self._writing()
        dropped = 0
        for start in range(0, len(pack_ids), 500):
            batch = pack_ids[start : start + 500]
            marks = ",".join("?" * len(batch))
            async with conn.execute(f"SELECT COALESCE(SUM(size), 0) FROM packs WHERE plan_id=? AND id IN ({marks})",
                                    (plan_id, *batch)) as cur:
                row = await cur.fetchone()
            dropped += int(row[0]) if row else 0
            await conn.execute(f"DELETE FROM packs WHERE plan_id=? AND id IN ({marks})", (plan_id, *batch))
            await conn.execute(f"DELETE FROM chunks WHERE plan_id=? AND pack IN ({marks})", (plan_id, *batch))
        return dropped

    async def put_chunks(self, plan_id: str, chunks: list[tuple[bytes, str, int]]) -> None:
        """Insert or move chunk rows (a blob now in another pack)."""
        conn = self._writing()
        await conn.executemany(
            "INSERT OR REPLACE INTO chunks (plan_id, id, pack, length) VALUES (?,?,?,?)",
            [(plan_id, cid, pack, length) for cid, pack, length in chunks],
        )

    async def replace_chunks(self, plan_id: str, chunks: list[tuple[bytes, str, int]],
                             packs: list[tuple[str, int]]) -> None:
        """The plan's chunk index becomes exactly `chunks` in `packs` (a reconcile), and its total
        size the sum of the packs'."""
        conn = self._writing()
        await conn.execute("DELETE FROM chunks WHERE plan_id=?", (plan_id,))
        await conn.execute("DELETE FROM packs WHERE plan_id=?", (plan_id,))
        await self.add_chunks(plan_id, chunks)
        await self.add_packs(plan_id, packs)
        await self.set_total_size(plan_id, sum(size for _, size in packs))

    async def count_chunks(self, plan_id: str) -> int:
        async with self._conn.execute("SELECT COUNT(*) FROM chunks WHERE plan_id=?", (plan_id,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # --- events --------------------------------------------------------------------------

    async def add_event(self, event: PlanEvent) -> None:
        conn = self._writing()
        await conn.execute("INSERT INTO events (plan_id, data) VALUES (?,?)",
                           (event.plan_id, msgspec.json.encode(event)))

    async def list_events(self, plan_id: str, limit: int) -> list[PlanEvent]:
        async with self._conn.execute(
            "SELECT data FROM events WHERE plan_id=? ORDER BY seq DESC LIMIT ?", (plan_id, limit)
        ) as cur:
            rows = list(await cur.fetchall())
        return [msgspec.json.decode(row[0], type=PlanEvent) for row in reversed(rows)]

    # --- tables kept by other modules (plan_options, credentials) ---------------------------

    async def add_schema(self, script: str) -> None:
        """Create a module's own tables (``CREATE TABLE IF NOT EXISTS …``) at start."""
        await self._conn.executescript(script)
        await self._conn.commit()

    async def fetch_all(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query of a module's own tables."""
        async with self._conn.execute(sql, params) as cur:
            return [tuple(row) for row in await cur.fetchall()]

    async def write(self, sql: str, params: tuple[object, ...] = ()) -> None:
        """One statement on a module's own tables, inside the running `transaction`."""
        await self._writing().execute(sql, params)

    # --- TimeVault Space sign-ins (timevault.services.catalog.spaces) -----------------------

    async def get_space_signin(self, space: str) -> SpaceSignIn | None:
        async with self._conn.execute(
            "SELECT space, ca, account, token FROM space_signins WHERE space=?", (space,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else SpaceSignIn(*row)

    async def list_space_signins(self) -> list[str]:
        async with self._conn.execute("SELECT space FROM space_signins ORDER BY space") as cur:
            return [str(row[0]) for row in await cur.fetchall()]

    async def save_space_signin(self, signin: SpaceSignIn, when: datetime) -> None:
        await self._writing().execute(
            "INSERT OR REPLACE INTO space_signins (space, ca, account, token, signed_in_at) VALUES (?,?,?,?,?)",
            (signin.space, signin.ca, signin.account, signin.token, when.isoformat()))

    async def delete_space_signin(self, space: str, token: str) -> None:
        await self._writing().execute("DELETE FROM space_signins WHERE space=? AND token=?", (space, token))

