"""The Space under real conditions: restarted in the middle of a backup, and backed by S3 (moto)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.space.conftest import CLI, Run
from tests.support.moto_server import DUMMY_AWS_ENV, create_bucket, start_moto_server
from tests.support.space_server import SpaceServer, write_token
from timevault.core.storage.s3 import S3Options, S3Storage

pytestmark = [pytest.mark.space, pytest.mark.timeout(240)]

MiB = 1024 * 1024


def live_data_objects(space: SpaceServer) -> int:
    with sqlite3.connect(space.data_dir / "space.db", timeout=5) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM objects WHERE state = 'live' AND name LIKE 'data/%'").fetchone()
    return int(count)


def test_space_restarted_during_a_backup(make_space: Callable[..., SpaceServer], run: Run, tmp_path: Path,
                                         password_file: Path) -> None:
    space = make_space()
    space.add_user("rita")
    token_file = write_token(tmp_path / "token", space.sign_in_device("rita"))
    env = {**os.environ, "TIMEVAULT_SPACE_TOKEN_FILE": str(token_file), "TIMEVAULT_PASSWORD_FILE": str(password_file),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    location = space.location("big")
    source = tmp_path / "src"
    source.mkdir()
    for i in range(12):
        (source / f"f{i:02d}.bin").write_bytes(os.urandom(10 * MiB))
    assert run("repo", "init", location, env=env).returncode == 0

    backup = subprocess.Popen([*CLI, "repo", "backup", location, str(source), "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while live_data_objects(space) < 1:  # the first pack is stored: the backup is under way
            assert backup.poll() is None, backup.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        space.kill()  # no goodbye: connections drop in the middle of uploads
        assert backup.poll() is None, "the backup must not be over yet"
        time.sleep(1.0)
        space.start()
        out, err = backup.communicate(timeout=180)
    finally:
        if backup.poll() is None:
            backup.kill()
    assert backup.returncode == 0, err
    assert "retrying" in err  # it did meet the outage
    assert json.loads(out)["files"] == 12

    check = run("repo", "check", location, "--read-data", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    target = tmp_path / "restored"
    assert run("repo", "restore", location, "latest", "--target", str(target), env=env).returncode == 0
    for name in ("f00.bin", "f11.bin"):
        assert (target / str(source).lstrip("/") / name).read_bytes() == (source / name).read_bytes()
    # Writes the kill cut off are cleaned up: every version on disk belongs to a live or trashed object.
    with sqlite3.connect(space.data_dir / "space.db") as conn:
        states = {row[0] for row in conn.execute("SELECT state FROM objects")}
    assert states <= {"live", "trash"}


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    saved = {key: os.environ.get(key) for key in DUMMY_AWS_ENV}
    os.environ.update(DUMMY_AWS_ENV)
    url, stop = start_moto_server()
    try:
        yield url
    finally:
        stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def test_space_backed_by_s3(moto: str, make_space: Callable[..., SpaceServer], run: Run, tmp_path: Path,
                                  password_file: Path, make_tree: Callable[..., Path]) -> None:
    await create_bucket(moto, "space-bucket")
    space = make_space("--storage", f"s3://space-bucket/objects?endpoint={moto}&path_style=true",
                       env=DUMMY_AWS_ENV)
    space.add_user("sam")
    token_file = write_token(tmp_path / "token", space.sign_in_device("sam"))
    env = {"TIMEVAULT_SPACE_TOKEN_FILE": str(token_file), "TIMEVAULT_PASSWORD_FILE": str(password_file)}
    location = space.location("docs")
    source = make_tree({"a.txt": "on s3", "big.bin": os.urandom(3 * MiB)})
    assert run("repo", "init", location, env=env).returncode == 0
    backup = run("repo", "backup", location, str(source), env=env)
    assert backup.returncode == 0, backup.stderr
    target = tmp_path / "restored"
    assert run("repo", "restore", location, "latest", "--target", str(target), env=env).returncode == 0
    assert (target / str(source).lstrip("/") / "big.bin").read_bytes() == (source / "big.bin").read_bytes()

    bucket = S3Storage(S3Options("space-bucket", "objects", endpoint=moto, path_style=True))
    try:
        keys = [info async for info in bucket.list()]
        status, account = space.request("GET", "/space/v1/account", token=token_file.read_text().strip())
        assert status == 200
        # Every object (live or in the trash) is one segment in the bucket, under the account's own
        # prefix, never in clear.
        repo = account["repos"][0]
        assert len(keys) == repo["objects"] + repo["trash_objects"]
        assert sum(info.size for info in keys) == account["used"]
        assert len({info.name.split("/")[0] for info in keys}) == 1
        assert not [info for info in keys if b"on s3" in await bucket.get(info.name)]

        holder = space.holder("sam")
        prune_like = run("repo", "forget", location, "latest", env=env)
        assert prune_like.returncode == 0
        trash = holder.call("GET", "/space/v1/trash")[1]
        assert trash["total"] > repo["trash_objects"]  # the forgotten snapshot joined the trash
        assert any(t["name"].startswith("snapshots/") for t in trash["objects"])
        assert holder.call("POST", "/space/v1/trash/empty", {})[1] == {"removed": trash["total"]}
        live = space.request("GET", "/space/v1/account", token=token_file.read_text().strip())[1]["repos"][0]
        assert live["trash_objects"] == 0
        for _ in range(100):  # the emptied versions' segments leave the bucket
            if len([info async for info in bucket.list()]) == live["objects"]:
                break
            await asyncio.sleep(0.05)
        assert len([info async for info in bucket.list()]) == live["objects"]
    finally:
        await bucket.close()
