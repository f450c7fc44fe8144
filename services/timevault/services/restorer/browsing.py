"""Browsing sessions: a plan's repository unlocked once, held in this restorer's memory only.

``tv.browse.open`` (queue group ``restorer``) opens the repository with the password and answers
a secret session id ``<instance>.<random>``; the later requests of that session go to this
instance's own subjects (``tv.browse.<instance>.ls|diff|find|restore|lock|touch``), since no
other process holds the key. A session locks itself after `idle_timeout` seconds without a
request (default 10 minutes) or when asked to; either way the repository is closed and its keys
dropped. Nothing of a session is ever written anywhere, and a restarted restorer has none.

Decoded folders are cached per session (`TreeCache`), so walking back and forth costs no
further reads or decryption; a folder is sent in pages (`BrowseList.limit`) that the gateway
joins, so a folder of any size fits NATS' message limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from nats.aio.client import Client as NATS

from timevault.proto import subjects
from timevault.proto.browse import (
    IDLE_MAX,
    LIST_PAGE,
    BrowseDiff,
    BrowseEntry,
    BrowseFind,
    BrowseList,
    BrowseListing,
    BrowseLocked,
    BrowseOpen,
    BrowseRef,
    BrowseRestore,
    BrowseSession,
    DiffChange,
    FindMatch,
    FindResult,
    FindVersion,
    SnapshotDiff,
)
from timevault.proto.errors import ServiceError, invalid
from timevault.proto.jobs import Job, JobCreate
from timevault.proto.plans import (
    PlanDetail,
    PlanRef,
    PlanSecrets,
    SnapshotInfo,
    SnapshotList,
    SnapshotListRequest,
    SnapshotRef,
)
from timevault.services.common import rpc
from timevault.services.common.jobs import JobContext
from timevault.services.common.util import utcnow

if TYPE_CHECKING:
    from timevault.core.repository import Repository, Snapshot, Tree

log = logging.getLogger(__name__)
IDLE_MIN = 60
MAX_SESSIONS = 32
TREES_KEPT = 512
LISTINGS_KEPT = 4


class TreeCache:
    """Decoded trees of one session, least recently used dropped first."""

    def __init__(self, repo: Repository, keep: int = TREES_KEPT) -> None:
        self.repo = repo
        self.keep = keep
        self._trees: OrderedDict[bytes, Tree] = OrderedDict()

    async def load_tree(self, tree_id: bytes) -> Tree:
        tree = self._trees.get(tree_id)
        if tree is not None:
            self._trees.move_to_end(tree_id)
            return tree
        tree = await self.repo.load_tree(tree_id)
        self._trees[tree_id] = tree
        while len(self._trees) > self.keep:
            self._trees.popitem(last=False)
        return tree


@dataclass
class Session:
    id: str
    plan_id: str
    plan_name: str
    repo: Repository
    idle_timeout: int
    trees: TreeCache
    last_used: float = field(default_factory=time.monotonic)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    listings: OrderedDict[tuple[str, str], list[BrowseEntry]] = field(default_factory=OrderedDict)

    @property
    def expired(self) -> bool:
        return time.monotonic() - self.last_used > self.idle_timeout

    def info(self) -> BrowseSession:
        return BrowseSession(session=self.id, plan_id=self.plan_id, idle_timeout=self.idle_timeout,
                             expires_at=utcnow() + timedelta(seconds=self.idle_timeout))


class BrowseService:
    """The sessions of one restorer instance."""

    def __init__(self, nc: NATS, instance: str, *, sweep_every: float = 5.0, roots: list[str] | None = None,
                 data_dir: str | None = None) -> None:
        self.nc = nc
        self.instance = instance
        self.sweep_every = sweep_every
        self.roots = [os.path.abspath(root) for root in roots] if roots else None
        self.data_dir = data_dir
        self.sessions: dict[str, Session] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await rpc.serve(self.nc, subjects.BROWSE_OPEN, BrowseOpen, self.open, queue=subjects.RESTORER_QUEUE)
        ops: list[tuple[str, type, Any]] = [("ls", BrowseList, self.ls), ("diff", BrowseDiff, self.diff),
                                            ("find", BrowseFind, self.find), ("restore", BrowseRestore, self.restore),
                                            ("lock", BrowseRef, self.lock), ("touch", BrowseRef, self.touch)]
        for op, request_type, handler in ops:
            await rpc.serve(self.nc, subjects.browse_op(self.instance, op), request_type, handler)
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for session_id in list(self.sessions):
            await self._close(session_id)

    # --- sessions ------------------------------------------------------------------------

    async def open(self, req: BrowseOpen) -> BrowseSession:
        from timevault.core.repository import Repository, RepositoryError, WrongPassword
        from timevault.core.storage import StorageError
        from timevault.services.common.locations import open_service_location

        if not req.password:
            raise invalid("the password is required", "password")
        if not IDLE_MIN <= req.idle_timeout <= IDLE_MAX:
            raise invalid(f"idle_timeout must be {IDLE_MIN}..{IDLE_MAX} seconds", "idle_timeout")
        plan = await rpc.request(self.nc, subjects.PLAN_SECRETS, PlanRef(plan=req.plan), PlanSecrets)
        name = (await rpc.request(self.nc, subjects.PLAN_GET, PlanRef(plan=plan.plan_id), PlanDetail)).name
        try:
            storage = open_service_location(plan.location, plan.credentials, plan.space_token)
        except ValueError as exc:
            raise ServiceError("unavailable", f"cannot open the repository: {exc}", "location") from exc
        try:
            repo = await Repository.open(storage, req.password)
        except WrongPassword as exc:
            await storage.close()
            raise ServiceError("unauthorized", "wrong password for this plan's repository", "password") from exc
        except (RepositoryError, StorageError, OSError) as exc:
            await storage.close()
            raise ServiceError("unavailable", f"cannot open the repository: {exc}", "location") from exc
        while len(self.sessions) >= MAX_SESSIONS:  # the least recently used one goes
            await self._close(min(self.sessions.values(), key=lambda s: s.last_used).id)
        session = Session(id=f"{self.instance}.{secrets.token_urlsafe(32)}", plan_id=plan.plan_id,
                          plan_name=name, repo=repo,
                          idle_timeout=req.idle_timeout, trees=TreeCache(repo))
        self.sessions[session.id] = session
        log.info("browsing session for plan %s opened (idle timeout %d s)", plan.plan_id, req.idle_timeout)
        return session.info()

    def _session(self, session_id: str, plan: str | None = None) -> Session:
        session = self.sessions.get(session_id)
        if session is None or session.expired:
            raise ServiceError("unauthorized", "the browsing session has ended (locked, or idle too long); "
                               "unlock the plan again", "session")
        if plan is not None and plan not in (session.plan_id, session.plan_name):
            raise ServiceError("unauthorized", "this browsing session is for another plan; unlock this one",
                               "session")
        session.last_used = time.monotonic()
        return session

    async def _close(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            session.trees = TreeCache(session.repo, 0)
            session.listings.clear()
            with contextlib.suppress(Exception):
                await session.repo.close()
            log.info("browsing session for plan %s closed", session.plan_id)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every)
            for session in list(self.sessions.values()):
                if session.expired:
                    await self._close(session.id)

    async def lock(self, req: BrowseRef) -> BrowseLocked:
        await self._close(req.session)
        return BrowseLocked()

    async def touch(self, req: BrowseRef) -> BrowseSession:
        return self._session(req.session).info()

    # --- reading -------------------------------------------------------------------------

    async def _snapshot(self, session: Session, ref: str) -> tuple[str, Snapshot]:
        info = await rpc.request(self.nc, subjects.SNAPSHOT_GET, SnapshotRef(plan=session.plan_id, snapshot=ref),
                                 SnapshotInfo)
        snapshot = session.snapshots.get(info.id)
        if snapshot is None:
            snapshot = session.snapshots[info.id] = await self._read(session.repo.load_snapshot(info.id))
        return info.id, snapshot

    async def _read(self, work: Any) -> Any:
        """Await a core read, turning its errors into clear replies."""
        from timevault.core.browse import BrowseError
        from timevault.core.repository import RepositoryError
        from timevault.core.storage import StorageError

        try:
            return await work
        except BrowseError as exc:
            raise ServiceError("not_found", str(exc), "path") from exc
        except (RepositoryError, StorageError, OSError) as exc:
            raise ServiceError("unavailable", f"cannot read the repository: {exc}", "location") from exc

    async def ls(self, req: BrowseList) -> BrowseListing:
        from timevault.core import browse

        session = self._session(req.session, req.plan)
        if req.offset < 0 or not 1 <= req.limit <= LIST_PAGE:
            raise invalid(f"offset must be >= 0 and limit 1..{LIST_PAGE}", "limit")
        snapshot_id, snapshot = await self._snapshot(session, req.snapshot)
        try:
            path = browse.join_path(browse.split_path(req.path))
        except browse.BrowseError as exc:
            raise invalid(str(exc), "path") from exc
        key = (snapshot_id, path)
        entries = session.listings.get(key)
        if entries is None:
            found = await self._read(browse.list_folder(session.trees, snapshot, path))
            entries = [BrowseEntry(name=_text(e.name), path=_text(e.path), type=_kind(e.type),
                                   size=e.size, mode=e.mode, mtime=e.mtime,
                                   target=_text(e.target) if e.target is not None else None) for e in found]
            session.listings[key] = entries
            while len(session.listings) > LISTINGS_KEPT:
                session.listings.popitem(last=False)
        else:
            session.listings.move_to_end(key)
        return BrowseListing(snapshot=snapshot_id, path=path, entries=entries[req.offset:req.offset + req.limit],
                             total=len(entries), offset=req.offset)

    async def diff(self, req: BrowseDiff) -> SnapshotDiff:
        from timevault.core import browse

        session = self._session(req.session, req.plan)
        a_id, a = await self._snapshot(session, req.from_snapshot)
        b_id, b = await self._snapshot(session, req.to_snapshot)
        result = await self._read(browse.diff(session.trees, a, b))

        def changes(items: list[browse.Change]) -> list[DiffChange]:
            return [DiffChange(path=_text(c.path), type=_kind(c.type), size=c.size,
                               old_size=c.old_size, what=c.what) for c in items]

        return SnapshotDiff(from_snapshot=a_id, to_snapshot=b_id, added=changes(result.added),
                            removed=changes(result.removed), changed=changes(result.changed),
                            added_size=result.added_size, removed_size=result.removed_size)

    async def find(self, req: BrowseFind) -> FindResult:
        from timevault.core import browse

        session = self._session(req.session, req.plan)
        if not 1 <= req.limit <= 10000:
            raise invalid("limit must be 1..10000", "limit")
        try:
            browse.name_matcher(req.pattern)
        except browse.BrowseError as exc:
            raise invalid(str(exc), "pattern") from exc
        listing = await rpc.request(self.nc, subjects.SNAPSHOT_LIST, SnapshotListRequest(plan=session.plan_id),
                                    SnapshotList)
        snapshots = []
        for info in listing.snapshots:
            if info.status == "completed":
                snapshots.append(await self._snapshot(session, info.id))
        found, truncated = await self._read(browse.find(session.trees, snapshots, req.pattern, limit=req.limit))
        return FindResult(pattern=req.pattern, truncated=truncated, matches=[
            FindMatch(path=_text(f.path), type=_kind(f.type), versions=[
                FindVersion(snapshot=v.snapshot, time=v.time, size=v.size, mtime=v.mtime) for v in f.versions])
            for f in found])

    # --- restoring chosen items ------------------------------------------------------------

    async def restore(self, req: BrowseRestore) -> Job:
        from timevault.core import browse

        session = self._session(req.session, req.plan)
        if not req.paths or len(req.paths) > 1000:
            raise invalid("choose 1..1000 files or folders to restore", "paths")
        for path in req.paths:
            try:
                if not path.startswith("/"):
                    raise browse.BrowseError(f"{path!r} is not an absolute path in the snapshot")
                browse.split_path(path)
            except browse.BrowseError as exc:
                raise invalid(str(exc), "paths") from exc
        target = req.target
        if target is not None and (not os.path.isabs(target) or "\0" in target):
            raise invalid("target must be an absolute folder path", "target")
        snapshot_id, snapshot = await self._snapshot(session, req.snapshot)
        for path in req.paths:
            await self._read(browse.find_node(session.trees, snapshot.tree, path))
        await self._check_destinations(session, req.paths, target)
        job = await rpc.request(self.nc, subjects.JOB_CREATE, JobCreate(
            plan=session.plan_id, kind="restore", snapshot=snapshot_id,
            target=os.path.normpath(target) if target else "/", includes=list(req.paths),
            worker=self.instance, original_place=target is None), Job)
        task = asyncio.create_task(self._run(job, session))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return job

    async def _check_destinations(self, session: Session, paths: list[str], target: str | None) -> None:
        """Every folder the items land in must lie under a restore root, as for any restore."""
        from timevault.core.restore_target import TargetError, check_under_roots, default_roots

        plan = await rpc.request(self.nc, subjects.PLAN_GET, PlanRef(plan=session.plan_id), PlanDetail)
        roots = self.roots or default_roots(plan.sources, self.data_dir)
        folders = [os.path.normpath(target)] if target else sorted({os.path.dirname(p.rstrip("/")) for p in paths})
        for folder in folders:
            try:
                check_under_roots(folder, roots)
            except TargetError as exc:
                raise invalid(str(exc), "target" if target else "paths") from exc

    async def _run(self, job: Job, session: Session) -> None:
        from timevault.core.restore_items import restore_items

        async with JobContext(self.nc, job, self.instance) as ctx:
            def progress(p: Any) -> None:
                ctx.update(files_done=p.files_done, bytes_done=p.bytes_done, files_total=p.files_total,
                           bytes_total=p.bytes_total)
                session.last_used = time.monotonic()  # a long restore keeps its session open

            try:
                async with session.repo.read_lock():  # a prune's sweep waits for this restore
                    result = await restore_items(session.repo, job.snapshot_id or "", job.includes,
                                                 None if job.original_place else job.target,
                                                 progress=progress, cancel=ctx.cancel)
            except asyncio.CancelledError:
                await ctx.finish("canceled", "canceled")
                return
            except Exception as exc:
                log.warning("restore %s failed: %s", job.id, exc)
                await ctx.finish("canceled" if ctx.cancel.is_set() else "failed", str(exc) or type(exc).__name__)
                return
            ctx.update(files_done=result.files, bytes_done=result.bytes, files_total=result.files,
                       bytes_total=result.bytes)
            await ctx.log([_text(line) for line in result.notes() + result.errors], "restore")
            if result.errors:
                await ctx.finish("failed", f"{len(result.errors)} files not restored; first: {result.errors[0]}")
            else:
                await ctx.finish("completed")


def _kind(value: str) -> Literal["file", "dir", "symlink"]:
    if value == "dir":
        return "dir"
    return "symlink" if value == "symlink" else "file"


def _text(value: str) -> str:
    """A name as JSON can carry it (names that are not UTF-8 show replacement characters)."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
