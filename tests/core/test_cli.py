"""The `timevault repo` command line contract: JSON output, snapshot references, passwords, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from timevault.core.archiver import backup
from timevault.core.repository import WrongPassword
from timevault.core.repository.repo import Repository, RepositoryError

from .conftest import (
    PASSWORD,
    assert_clean_error,
    assert_manifests_equal,
    build_tree,
    new_repo,
    random_bytes,
    restored_path,
    run_cli,
    stored_objects,
    tree_manifest,
)


@dataclass
class CliRepo:
    path: Path
    pw: Path
    source: Path
    snapshots: list[dict]
    manifests: list[dict]


@pytest.fixture(scope="module")
def cli_repo(tmp_path_factory: pytest.TempPathFactory) -> CliRepo:
    """A repository made with the CLI: init and two backups of a small tree."""
    base = tmp_path_factory.mktemp("cli")
    pw = base / "pw"
    pw.write_text(PASSWORD + "\n")
    path = base / "repo"
    result = run_cli("repo", "init", path, "--password-file", pw)
    assert result.code == 0, result.stderr
    assert "created repository" in result.stdout
    source = build_tree(base / "src", {"a.txt": "first", "d/b.bin": random_bytes(50_000, 1), "empty/": None})
    snapshots, manifests = [], []
    for content in ("first", "second version"):
        (source / "a.txt").write_text(content)
        result = run_cli("repo", "backup", path, source, "--json", "--password-file", pw)
        assert result.code == 0, result.stderr
        snapshots.append(json.loads(result.stdout))
        manifests.append(tree_manifest(source))
    return CliRepo(path, pw, source, snapshots, manifests)


def test_backup_json_fields(cli_repo: CliRepo) -> None:
    first, second = cli_repo.snapshots
    for snap in (first, second):
        assert {"id", "time", "files", "size", "added_size"} <= snap.keys()
        assert isinstance(snap["id"], str) and len(snap["id"]) == 64
        assert snap["files"] == 2
        assert snap["paths"] == [str(cli_repo.source)]
    assert first["size"] == len("first") + 50_000
    assert second["size"] == len("second version") + 50_000
    assert first["added_size"] > 50_000
    assert second["added_size"] < 10_000
    assert second["unchanged_files"] == 1
    assert second["parent"] == first["id"]


def test_snapshots_json_oldest_first(cli_repo: CliRepo) -> None:
    result = run_cli("repo", "snapshots", cli_repo.path, "--json", "--password-file", cli_repo.pw)
    assert result.code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert isinstance(listed, list)
    assert [s["id"] for s in listed] == [s["id"] for s in cli_repo.snapshots]
    assert listed[0]["time"] <= listed[1]["time"]
    text = run_cli("repo", "snapshots", cli_repo.path, "--password-file", cli_repo.pw)
    assert text.code == 0 and "2 snapshots" in text.stdout
    assert cli_repo.snapshots[0]["id"][:8] in text.stdout


@pytest.mark.parametrize("which", ["latest", "prefix"])
def test_restore_by_reference(cli_repo: CliRepo, tmp_path: Path, which: str) -> None:
    snap = cli_repo.snapshots[1 if which == "latest" else 0]
    ref = "latest" if which == "latest" else snap["id"][:7]
    manifest = cli_repo.manifests[1 if which == "latest" else 0]
    target = tmp_path / "out"
    result = run_cli(
        "repo", "restore", cli_repo.path, ref, "--target", target, "--json", "--password-file", cli_repo.pw
    )
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["files"] == 2 and report["errors"] == []
    assert_manifests_equal(tree_manifest(restored_path(target, cli_repo.source)), manifest)


def test_restore_include(cli_repo: CliRepo, tmp_path: Path) -> None:
    rel = str(cli_repo.source).lstrip("/")
    target = tmp_path / "out"
    result = run_cli(
        "repo",
        "restore",
        cli_repo.path,
        "latest",
        "--target",
        target,
        "--include",
        f"{rel}/d",
        "--password-file",
        cli_repo.pw,
    )
    assert result.code == 0, result.stderr
    out = restored_path(target, cli_repo.source)
    assert sorted(p.name for p in out.iterdir()) == ["d"]
    assert (out / "d" / "b.bin").read_bytes() == random_bytes(50_000, 1)
    missing = run_cli(
        "repo",
        "restore",
        cli_repo.path,
        "latest",
        "--target",
        tmp_path / "o2",
        "--include",
        f"{rel}/nope",
        "--password-file",
        cli_repo.pw,
    )
    assert_clean_error(missing, "include")


def test_password_from_environment(cli_repo: CliRepo) -> None:
    result = run_cli(
        "repo", "snapshots", cli_repo.path, "--json", env={"TIMEVAULT_PASSWORD_FILE": str(cli_repo.pw)}
    )
    assert result.code == 0, result.stderr
    assert len(json.loads(result.stdout)) == 2


def test_wrong_password(cli_repo: CliRepo, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("not the password\n")
    for args in (("snapshots",), ("restore", "latest", "--target", str(tmp_path / "o"))):
        result = run_cli("repo", args[0], cli_repo.path, *args[1:], "--password-file", bad)
        assert result.code == 12
        assert_clean_error(result, "wrong password")
    assert not (tmp_path / "o").exists()


def test_password_sources_errors(cli_repo: CliRepo, tmp_path: Path) -> None:
    assert_clean_error(run_cli("repo", "snapshots", cli_repo.path), "password")  # no tty, no file
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert_clean_error(run_cli("repo", "snapshots", cli_repo.path, "--password-file", empty), "empty")


def test_bad_and_ambiguous_snapshot_references(cli_repo: CliRepo, tmp_path: Path) -> None:
    args = ("--target", str(tmp_path / "o"), "--password-file", str(cli_repo.pw))
    assert_clean_error(
        run_cli("repo", "restore", cli_repo.path, "deadbeefnothere", *args), "no snapshot matches"
    )
    # Make a second snapshot object whose id shares a long prefix with the first.
    first = cli_repo.snapshots[0]["id"]
    twin_id = first[:10] + ("0" if first[10] != "0" else "1") + first[11:]
    snapshots_dir = cli_repo.path / "snapshots"
    shutil.copy(snapshots_dir / first, snapshots_dir / twin_id)
    try:
        assert_clean_error(run_cli("repo", "restore", cli_repo.path, first[:10], *args), "ambiguous")
        assert run_cli("repo", "restore", cli_repo.path, first[:11], *args).code == 0
    finally:
        (snapshots_dir / twin_id).unlink()


async def test_snapshot_references_in_process(cli_repo: CliRepo) -> None:
    from timevault.core.storage import LocalStorage

    repo = await Repository.open(LocalStorage(cli_repo.path), PASSWORD)
    first, second = (s["id"] for s in cli_repo.snapshots)
    assert await repo.resolve_snapshot("latest") == second
    assert await repo.resolve_snapshot(first[:6]) == first
    assert await repo.resolve_snapshot(first) == first
    for bad in ("", "zz", first + "0"):
        with pytest.raises(RepositoryError):
            await repo.resolve_snapshot(bad)
    with pytest.raises(WrongPassword):
        await Repository.open(LocalStorage(cli_repo.path), "wrong")


def test_missing_and_bad_locations(tmp_path: Path, pw_file: Path) -> None:
    assert_clean_error(
        run_cli("repo", "snapshots", tmp_path / "nowhere", "--password-file", pw_file),
        "not a timevault repository",
    )
    assert_clean_error(
        run_cli("repo", "snapshots", "ftp://host/x", "--password-file", pw_file), "unsupported"
    )


def test_init_rules_and_check(cli_repo: CliRepo, tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("abc\n")
    location = tmp_path / "repo"
    assert_clean_error(run_cli("repo", "init", location, "--password-file", short), "at least 4")
    assert not (location / "config").exists()
    assert_clean_error(
        run_cli("repo", "init", f"file://{cli_repo.path}", "--password-file", cli_repo.pw), "already exists"
    )
    assert_clean_error(
        run_cli("repo", "backup", cli_repo.path, tmp_path / "does-not-exist", "--password-file", cli_repo.pw),
        "does not exist",
    )
    check = run_cli("repo", "check", cli_repo.path, "--read-data", "--password-file", cli_repo.pw)
    assert check.code == 0 and "no errors found" in check.stdout, check


async def test_passwd(tmp_path: Path, pw_file: Path) -> None:
    location = tmp_path / "repo"
    repo = await new_repo(location)
    source = build_tree(tmp_path / "src", {"f": random_bytes(30_000, 3)})
    await backup(repo, [str(source)])
    keep = ("config", "data/", "index/", "snapshots/")
    before = {k: v for k, v in stored_objects(location).items() if k.startswith(keep)}
    keys_before = set(stored_objects(location, "keys/"))

    new_pw = tmp_path / "new-pw"
    new_pw.write_text("a brand new password\n")
    weak = tmp_path / "weak"
    weak.write_text("abc")
    assert_clean_error(
        run_cli("repo", "passwd", location, "--password-file", pw_file, "--new-password-file", weak),
        "at least 4",
    )
    result = run_cli("repo", "passwd", location, "--password-file", pw_file, "--new-password-file", new_pw)
    assert result.code == 0, result.stderr

    after = {k: v for k, v in stored_objects(location).items() if k.startswith(keep)}
    assert after == before, "changing the password must not rewrite data, index, snapshots or config"
    keys_after = set(stored_objects(location, "keys/"))
    assert len(keys_after) == 1 and keys_after.isdisjoint(keys_before)

    assert_clean_error(run_cli("repo", "snapshots", location, "--password-file", pw_file), "wrong password")
    target = tmp_path / "out"
    ok = run_cli("repo", "restore", location, "latest", "--target", target, "--password-file", new_pw)
    assert ok.code == 0, ok.stderr
    assert (restored_path(target, source) / "f").read_bytes() == random_bytes(30_000, 3)


def test_files_cache_spares_reading_unchanged_files(tmp_path: Path, pw_file: Path) -> None:
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    assert run_cli("repo", "init", repo, "--password-file", pw_file).code == 0
    source = build_tree(tmp_path / "src", {"keep.txt": "same", "d/edit.txt": "v1", "d/big.bin": random_bytes(70_000, 5)})

    def backup_json(*flags: str | Path) -> dict:
        result = run_cli("repo", "backup", repo, source, "--json", "--password-file", pw_file, *flags)
        assert result.code == 0, result.stderr
        return json.loads(result.stdout)

    first = backup_json("--cache-dir", cache)
    [cache_file] = list(cache.iterdir())  # (a repository this small keeps no set of blob ids)
    assert cache_file.name.endswith(".files") and cache_file.stat().st_mode & 0o777 == 0o600
    content = cache_file.read_bytes()
    assert b"keep.txt" not in content and b"edit.txt" not in content, "the cache must be encrypted"

    (source / "d" / "edit.txt").write_text("version two")
    second = backup_json("--cache-dir", cache)
    assert second["parent"] == first["id"]
    assert second["unchanged_files"] == 2 and second["files"] == 3
    assert cache_file.read_bytes() != content, "the cache follows the newest snapshot"

    # Without the cache the parent's trees serve the same purpose; nothing is written.
    third = backup_json("--no-cache", "--cache-dir", tmp_path / "unused")
    assert third["unchanged_files"] == 3
    assert not (tmp_path / "unused").exists()

    # A cache left from another snapshot is not trusted: the trees are used instead.
    shutil.copy(cache_file, tmp_path / "stale")
    (source / "keep.txt").write_text("changed")
    backup_json("--cache-dir", cache)
    shutil.copy(tmp_path / "stale", cache_file)
    fifth = backup_json("--cache-dir", cache)
    assert fifth["unchanged_files"] == 3
    target = tmp_path / "out"
    assert run_cli("repo", "restore", repo, "latest", "--target", target, "--password-file", pw_file).code == 0
    assert_manifests_equal(tree_manifest(restored_path(target, source)), tree_manifest(source))


def test_exit_status_and_output_survive_the_fast_exit(cli_repo: CliRepo, tmp_path: Path) -> None:
    # The console script leaves with os._exit: output must still be complete and the code right.
    listed = run_cli("repo", "snapshots", cli_repo.path, "--json", "--password-file", cli_repo.pw)
    assert listed.code == 0 and len(json.loads(listed.stdout)) == len(cli_repo.snapshots)
    missing = run_cli("repo", "snapshots", tmp_path / "nothing-here", "--password-file", cli_repo.pw)
    assert_clean_error(missing, "not a TimeVault repository")


def test_system_commands_do_not_load_the_engine(pw_file: Path) -> None:
    """`timevault backup` and friends only talk HTTP; the engine's imports cost ~0.2 s each time."""
    code = (
        "import sys; from timevault.cli.main import build_parser; "
        "args = build_parser().parse_args(['restore', 'x', 'latest', '--target', 't']); "
        f"from timevault.cli.passwords import get_password; get_password({str(pw_file)!r}); "
        "print(sorted(m for m in ('asyncio', 'timevault.core.archiver', 'timevault.core.crypto', 'timevault.core.restorer') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # The repo commands are all still there, and run.
    help_text = subprocess.run([sys.executable, "-m", "timevault.cli.main", "repo", "--help"],
                               capture_output=True, text=True, check=True).stdout
    for command in ("init", "backup", "snapshots", "restore", "check", "forget", "prune", "passwd"):
        assert command in help_text
