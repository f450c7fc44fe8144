"""Soft deletes: what a device deletes or replaces stays in the account's trash, restorable by the
account holder, until it expires or the holder empties the trash."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.space.conftest import Run
from tests.support.space_server import SpaceServer, write_token
from timevault.core.storage import ObjectNotFound
from timevault.core.storage.space import SpaceStorage, parse_space_location

pytestmark = [pytest.mark.space, pytest.mark.timeout(120)]


def stored_files(space: SpaceServer) -> int:
    root = space.data_dir / "objects"
    return sum(len(files) for _, _, files in os.walk(root)) if root.exists() else 0


async def eventually(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether `condition` becomes true within `seconds` (the janitor works in the background)."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / 0.05) + 1):
        if condition():
            return True
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return condition()


def account(space: SpaceServer, token: str) -> dict:
    status, body = space.request("GET", "/space/v1/account", token=token)
    assert status == 200, body
    return dict(body)


async def test_delete_goes_to_the_trash_and_comes_back(space: SpaceServer) -> None:
    space.add_user("tina")
    token = space.sign_in_device("tina")
    storage = SpaceStorage(parse_space_location(space.location("docs")), token)
    holder = space.holder("tina")
    try:
        data = os.urandom(200_000)
        await storage.put("data/aa/pack", data)
        await storage.put("locks/l1", b"lock")
        used = account(space, token)["used"]
        await storage.delete("data/aa/pack")
        await storage.delete("locks/l1")  # locks are removed for good, never trashed
        with pytest.raises(ObjectNotFound):
            await storage.get("data/aa/pack")
        # The trash still holds (and counts) the deleted pack, not the lock.
        assert account(space, token)["used"] == used - len(b"lock")
        status, trash = holder.call("GET", "/space/v1/trash")
        assert status == 200 and trash["total"] == 1
        (item,) = trash["objects"]
        assert (item["repo"], item["name"], item["size"]) == ("docs", "data/aa/pack", len(data))
        assert item["expires"] - item["deleted"] == pytest.approx(7 * 86400)

        status, body = holder.call("POST", "/space/v1/trash/restore", {"ids": [item["id"]]})
        assert (status, body) == (200, {"restored": 1})
        assert await storage.get("data/aa/pack") == data
        assert holder.call("GET", "/space/v1/trash")[1]["total"] == 0
    finally:
        await storage.close()


async def test_replacing_an_object_keeps_the_old_version(space: SpaceServer) -> None:
    space.add_user("uma")
    token = space.sign_in_device("uma")
    storage = SpaceStorage(parse_space_location(space.location("docs")), token)
    holder = space.holder("uma")
    try:
        await storage.put("config", b"first")
        await storage.put("config", b"first")  # the same bytes again (a retry): nothing to keep
        assert holder.call("GET", "/space/v1/trash")[1]["total"] == 0
        await storage.put("config", b"second")
        assert await storage.get("config") == b"second"
        (old,) = holder.call("GET", "/space/v1/trash")[1]["objects"]
        assert (old["name"], old["size"]) == ("config", 5)
        # Restoring the old version swaps the current one into the trash.
        holder.call("POST", "/space/v1/trash/restore", {"ids": [old["id"]]})
        assert await storage.get("config") == b"first"
        (newer,) = holder.call("GET", "/space/v1/trash")[1]["objects"]
        assert newer["size"] == len(b"second")
        await storage.put("locks/l", b"one")
        await storage.put("locks/l", b"two")  # a lock refresh leaves nothing behind
        assert holder.call("GET", "/space/v1/trash")[1]["total"] == 1
    finally:
        await storage.close()


async def test_emptying_the_trash_frees_the_space_and_the_bytes(space: SpaceServer) -> None:
    space.add_user("vic")
    token = space.sign_in_device("vic")
    storage = SpaceStorage(parse_space_location(space.location("docs")), token)
    holder = space.holder("vic")
    try:
        before = stored_files(space)
        for i in range(3):
            await storage.put(f"data/bb/p{i}", os.urandom(50_000))
        assert stored_files(space) == before + 3
        for i in range(3):
            await storage.delete(f"data/bb/p{i}")
        assert account(space, token)["used"] == 150_000
        status, body = holder.call("POST", "/space/v1/trash/empty", {})
        assert (status, body) == (200, {"removed": 3})
        assert account(space, token)["used"] == 0
        assert await eventually(lambda: stored_files(space) == before, 5)
        # A device cannot empty the trash or restore: only the account holder can.
        assert space.request("POST", "/space/v1/trash/empty", {}, token=token)[0] == 401
        # And the holder's calls need the session's CSRF token.
        status, _ = space.request("POST", "/space/v1/trash/empty", {}, opener=holder.opener)
        assert status == 403
    finally:
        await storage.close()


async def test_trash_expires(make_space: Callable[..., SpaceServer]) -> None:
    space = make_space("--trash-days", "0.00002", "--janitor-every", "0.3")  # ~1.7 s
    space.add_user("wes")
    token = space.sign_in_device("wes")
    storage = SpaceStorage(parse_space_location(space.location("docs")), token)
    try:
        await storage.put("data/cc/p", os.urandom(10_000))
        await storage.delete("data/cc/p")
        assert account(space, token)["used"] == 10_000
        assert await eventually(lambda: account(space, token)["used"] == 0, 10)
        assert space.holder("wes").call("GET", "/space/v1/trash")[1]["total"] == 0
        assert stored_files(space) == 0
    finally:
        await storage.close()


def test_a_compromised_timevault_cannot_destroy_a_backup(space: SpaceServer, run: Run, tmp_path: Path,
                                                         password_file: Path,
                                                         make_tree: Callable[..., Path]) -> None:
    """A device that deletes every object of a repository; the holder restores them all."""
    space.add_user("xena")
    token_file = write_token(tmp_path / "token", space.sign_in_device("xena"))
    env = {"TIMEVAULT_SPACE_TOKEN_FILE": str(token_file), "TIMEVAULT_PASSWORD_FILE": str(password_file)}
    location = space.location("home")
    source = make_tree({"letter.txt": "dear diary", "pic.raw": os.urandom(500_000)})
    assert run("repo", "init", location, env=env).returncode == 0
    assert run("repo", "backup", location, str(source), env=env).returncode == 0

    async def wipe() -> int:
        storage = SpaceStorage(parse_space_location(location), token_file.read_text().strip())
        try:
            names = [info.name async for info in storage.list()]
            await storage.delete_many(names)
            return len(names)
        finally:
            await storage.close()

    started = time.time()
    wiped = asyncio.run(wipe())
    assert wiped > 4
    assert run("repo", "snapshots", location, env=env).returncode == 10  # gone, as far as the device sees

    holder = space.holder("xena")
    trash = holder.call("GET", "/space/v1/trash?limit=1000")[1]
    # The trash also holds what the backups themselves retired (superseded endorsements): the
    # holder restores what was deleted since the attack began.
    recent = [t["id"] for t in trash["objects"] if t["deleted"] >= started]
    assert len(recent) == wiped
    status, body = holder.call("POST", "/space/v1/trash/restore", {"ids": recent})
    assert (status, body) == (200, {"restored": wiped})
    target = tmp_path / "restored"
    result = run("repo", "restore", location, "latest", "--target", str(target), env=env)
    assert result.returncode == 0, result.stderr
    assert (target / str(source).lstrip("/") / "letter.txt").read_text() == "dear diary"
