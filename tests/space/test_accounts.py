"""Accounts on a real Space: isolation, quotas (atomic, live changes), revocation, removal."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path

import pytest

from tests.space.conftest import Run
from tests.support.space_server import PASSWORD, SpaceServer, write_token
from timevault.core.storage import ObjectNotFound, StorageError, open_location
from timevault.core.storage.space import (
    SpaceQuotaExceeded,
    SpaceSignedOut,
    SpaceStorage,
    parse_space_location,
)
from timevault.space.sizes import SizeError, format_size, parse_size

pytestmark = [pytest.mark.space, pytest.mark.timeout(180)]

MiB = 1024 * 1024


def storage(space: SpaceServer, repo: str, token: str) -> SpaceStorage:
    return SpaceStorage(parse_space_location(space.location(repo)), token)


def test_sizes() -> None:
    assert parse_size("60MiB") == 60 * MiB
    assert parse_size("10GiB") == 10 * 1024 * MiB
    assert parse_size("1.5 GiB") == 3 * 512 * MiB
    assert parse_size("500MB") == 500_000_000
    assert parse_size("123456") == 123456
    assert parse_size("2m") == 2 * MiB
    for bad in ("", "ten", "5 parsecs", "-1", "1.5"):
        with pytest.raises(SizeError):
            parse_size(bad)
    assert format_size(60 * MiB) == "60.0 MiB" and format_size(None) == "unlimited"


async def test_accounts_are_isolated(space: SpaceServer) -> None:
    space.add_user("alice-i")
    space.add_user("bob-i")
    alice = storage(space, "docs", space.sign_in_device("alice-i"))
    bob = storage(space, "docs", space.sign_in_device("bob-i"))
    try:
        await alice.put("config", b"alice's config")
        await alice.put("keys/k1", b"alice's key")
        await bob.put("config", b"bob's config")
        assert await alice.get("config") == b"alice's config"
        assert await bob.get("config") == b"bob's config"
        # Bob's token reaches only Bob's repositories: Alice's objects do not exist for him.
        with pytest.raises(ObjectNotFound):
            await bob.get("keys/k1")
        with pytest.raises(ObjectNotFound):
            await bob.stat("keys/k1")
        assert [info.name async for info in bob.list()] == ["config"]
        await bob.delete("keys/k1")
        await bob.delete("config")
        assert await alice.get("keys/k1") == b"alice's key"
        assert await alice.get("config") == b"alice's config"
    finally:
        await alice.close()
        await bob.close()


def test_usage_is_per_account(space: SpaceServer) -> None:
    space.add_user("carol-i")
    token = space.sign_in_device("carol-i")
    status, body = space.request("GET", "/space/v1/account", token=token)
    assert status == 200
    assert body["account"] == "carol-i" and body["used"] == 0 and body["repos"] == []


async def test_quota_is_atomic_under_concurrent_writes(space: SpaceServer) -> None:
    space.add_user("dora-q", quota=10 * MiB)
    token = space.sign_in_device("dora-q")
    space_storage = storage(space, "race", token)
    data = os.urandom(MiB)
    try:
        results = await asyncio.gather(*(space_storage.put(f"data/{i:02x}/p", data) for i in range(16)),
                                       return_exceptions=True)
        stored = [r for r in results if r is None]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(stored) == 10 and len(refused) == 6
        assert all(isinstance(r, SpaceQuotaExceeded) and "quota" in str(r) for r in refused)
        status, body = space.request("GET", "/space/v1/account", token=token)
        assert status == 200 and body["used"] == 10 * MiB <= body["quota"]
        assert body["repos"] == [{"name": "race", "objects": 10, "size": 10 * MiB, "trash_objects": 0,
                                  "trash_size": 0}]
    finally:
        await space_storage.close()


async def test_quota_changes_apply_to_a_running_server(space: SpaceServer, run: Run) -> None:
    space.add_user("ed-q", quota=2 * MiB)
    space_storage = storage(space, "r", space.sign_in_device("ed-q"))
    try:
        await space_storage.put("data/aa/one", os.urandom(MiB))
        with pytest.raises(SpaceQuotaExceeded, match="quota"):
            await space_storage.put("data/aa/two", os.urandom(2 * MiB))
        result = run("space", "user", "set-quota", "ed-q", "4MiB", "--data-dir", str(space.data_dir))
        assert result.returncode == 0, result.stderr
        await space_storage.put("data/aa/two", os.urandom(2 * MiB))
        assert run("space", "user", "set-quota", "ed-q", "unlimited", "--data-dir",
                   str(space.data_dir)).returncode == 0
        await space_storage.put("data/aa/three", os.urandom(3 * MiB))
        listed = json.loads(run("space", "user", "list", "--data-dir", str(space.data_dir), "--json").stdout)
        mine = next(u for u in listed if u["name"] == "ed-q")
        assert mine["used"] == 6 * MiB and mine["quota"] is None and mine["devices"] == 1
    finally:
        await space_storage.close()


def test_backup_over_quota_fails_clearly_and_a_smaller_one_succeeds(
        space: SpaceServer, run: Run, tmp_path: Path, password_file: Path) -> None:
    quota = 60 * MiB
    space.add_user("fred-q", quota=quota)
    token_file = write_token(tmp_path / "token", space.sign_in_device("fred-q"))
    env = {"TIMEVAULT_SPACE_TOKEN_FILE": str(token_file), "TIMEVAULT_PASSWORD_FILE": str(password_file)}
    location = space.location("photos")
    source = tmp_path / "photos"
    source.mkdir()
    for i in range(8):  # 80 MiB of incompressible data
        (source / f"img{i}.raw").write_bytes(os.urandom(10 * MiB))
    assert run("repo", "init", location, env=env).returncode == 0

    too_big = run("repo", "backup", location, str(source), env=env)
    assert too_big.returncode == 1
    assert "quota" in too_big.stderr and "Traceback" not in too_big.stderr
    assert len(too_big.stderr.strip().splitlines()) == 1

    def usage() -> tuple[int, int]:
        listed = json.loads(run("space", "user", "list", "--data-dir", str(space.data_dir), "--json").stdout)
        mine = next(u for u in listed if u["name"] == "fred-q")
        return mine["used"], mine["quota"]

    used, limit = usage()
    assert limit == quota and 0 < used <= quota

    # The next, smaller backup: the person drops what does not fit.
    for i in range(3, 8):
        (source / f"img{i}.raw").unlink()
    smaller = run("repo", "backup", location, str(source), "--json", env=env)
    assert smaller.returncode == 0, smaller.stderr
    assert json.loads(smaller.stdout)["files"] == 3
    assert usage()[0] <= quota
    restored = tmp_path / "restored"
    assert run("repo", "restore", location, "latest", "--target", str(restored), env=env).returncode == 0
    assert (restored / str(source).lstrip("/") / "img2.raw").read_bytes() == (source / "img2.raw").read_bytes()


async def test_a_revoked_device_gets_401_at_once(space: SpaceServer) -> None:
    space.add_user("gina-r")
    token = space.sign_in_device("gina-r", device_name="old-laptop")
    space_storage = open_location(space.location("docs"), space_token=token)
    try:
        await space_storage.put("config", b"c")
        holder = space.holder("gina-r")
        status, body = holder.call("GET", "/space/v1/devices")
        (device,) = body["devices"]
        assert device["client"] == "TimeVault on old-laptop" and device["last_used"] is not None
        status, _ = holder.call("DELETE", f"/space/v1/devices/{device['id']}")
        assert status == 204
        with pytest.raises(SpaceSignedOut, match="signed out of Space"):
            await space_storage.get("config")  # through the retry wrapper: refused at once, not retried
        assert space.request("GET", "/space/v1/account", token=token)[0] == 401
    finally:
        await space_storage.close()


async def test_removing_an_account_signs_out_its_devices_and_frees_its_objects(
        space: SpaceServer, run: Run) -> None:
    space.add_user("hank-r")
    token = space.sign_in_device("hank-r")
    space_storage = storage(space, "docs", token)
    try:
        await space_storage.put("data/aa/pack", os.urandom(100_000))
        result = run("space", "user", "remove", "hank-r", "--data-dir", str(space.data_dir))
        assert result.returncode == 0, result.stderr
        with pytest.raises(SpaceSignedOut):
            await space_storage.get("data/aa/pack")
        # A new account of the same name is someone else: it sees nothing of the old one.
        space.add_user("hank-r")
        fresh = storage(space, "docs", space.sign_in_device("hank-r"))
        try:
            assert [info async for info in fresh.list()] == []
        finally:
            await fresh.close()
    finally:
        await space_storage.close()
    assert run("space", "user", "remove", "hank-nobody", "--data-dir", str(space.data_dir)).returncode == 1


def test_passwords_are_stored_as_argon2id(space: SpaceServer, run: Run, tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("a long enough secret\n")
    result = run("space", "user", "add", "ivy-p", "--data-dir", str(space.data_dir), "--quota", "1GiB",
                 "--password-file", str(password_file))
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(space.data_dir / "space.db") as conn:
        (stored,) = conn.execute("SELECT password FROM accounts WHERE name = 'ivy-p'").fetchone()
    assert stored.startswith("$argon2id$") and "a long enough secret" not in stored
    assert oct((space.data_dir / "space.db").stat().st_mode & 0o777) == "0o600"
    assert space.holder("ivy-p", "a long enough secret")
    again = run("space", "user", "add", "ivy-p", "--data-dir", str(space.data_dir),
                "--password-file", str(password_file))
    assert again.returncode == 1 and "exists already" in again.stderr
    short = tmp_path / "short"
    short.write_text("short\n")
    weak = run("space", "user", "add", "jay-p", "--data-dir", str(space.data_dir), "--password-file", str(short))
    assert weak.returncode == 2 and "at least 8" in weak.stderr  # a value not acceptable: exit 2
    bad_quota = run("space", "user", "add", "jay-p", "--data-dir", str(space.data_dir), "--quota", "lots",
                    "--password-file", str(password_file))
    assert bad_quota.returncode == 2 and "60MiB" in bad_quota.stderr


async def test_no_token_or_a_made_up_one_is_refused(space: SpaceServer) -> None:
    assert space.request("GET", "/space/v1/repos/docs/objects")[0] == 401
    assert space.request("GET", "/space/v1/repos/docs/objects", token="tvs_made-up")[0] == 401
    assert space.request("GET", "/space/v1/account", token=PASSWORD)[0] == 401
    with pytest.raises(StorageError):
        bad = storage(space, "docs", "tvs_made-up")
        try:
            await bad.put("config", b"x")
        finally:
            await bad.close()


