"""Storage faults under the running system (`timevault up`, `backup --wait`, `restore --wait`).

The job fails with one clear line naming the cause (`location is full`, `location is read-only`,
`location disappeared`), no snapshot is reported, no temporary file stays, no service logs a
traceback; once the cause is gone the next backup succeeds. A restore from a damaged pack
restores everything else and exits 3, naming what it lost.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.core.conftest import PASSWORD
from tests.faults.conftest import SmallDisk, temp_files
from tests.faults.system import MiB, System, job_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    root = tmp_path_factory.mktemp("storage-system")
    password = root / "pw"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    s = System(root, password)
    s.start()
    yield s
    s.holds.release()
    assert s.stop() == 0


def _source(root: Path, files: int, size: int, seed: str) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"f{i}.bin").write_bytes(rng.randbytes(size))
    (root / "notes.txt").write_text("small file\n")
    return root


def _plan(system: System, name: str, source: Path, location: Path) -> None:
    created = system.cli("plan", "create", name, "--source", source, "--daily", "--at", "03:00",
                         "--location", location, "--timezone", "UTC", "--password-file", system.password_file)
    assert created.returncode == 0, created.stderr


def _failed_backup(system: System, name: str, cause: str) -> dict[str, object]:
    result = system.cli("backup", name, "--wait", "--json")
    assert result.returncode == 1, result
    job = job_of(result.stdout)
    assert job is not None and job["status"] == "failed" and str(job["error"]).startswith(cause), result
    assert "\n" not in str(job["error"])
    text = system.cli("plan", "show", name)
    assert text.returncode == 0 and cause in text.stdout, text.stdout
    return job


def _no_tracebacks(system: System) -> None:
    logs = system.logs()
    assert "Traceback" not in logs and "never retrieved" not in logs, logs


def _snapshots(system: System, name: str) -> list[dict[str, object]]:
    shown = json.loads(system.cli("plan", "show", name, "--json").stdout)
    return [s for s in shown["snapshots"] if s["status"] == "completed"]


def _restores_exactly(system: System, name: str, source: Path, target: Path) -> None:
    restored = system.cli("restore", name, "latest", "--target", target, "--wait")
    assert restored.returncode == 0, restored.stderr
    inside = target / source.relative_to("/")
    assert {p.name: p.read_bytes() for p in inside.iterdir()} == {p.name: p.read_bytes() for p in source.iterdir()}


def test_disk_full_fails_the_job_with_one_line(
    system: System, small_disk: Callable[[int], SmallDisk], tmp_path: Path
) -> None:
    disk = small_disk(16)
    location = disk.path / "repo"
    source = _source(tmp_path / "src", files=5, size=5 * MiB, seed="full")
    _plan(system, "full", source, location)
    _failed_backup(system, "full", "location is full")
    assert temp_files(disk.path) == []
    assert _snapshots(system, "full") == []
    _no_tracebacks(system)
    disk.remount(size_mib=96)
    assert system.cli("backup", "full", "--wait").returncode == 0
    checked = system.cli("repo", "check", location, "--read-data")
    assert checked.returncode == 0 and "no errors found" in checked.stdout, checked
    _restores_exactly(system, "full", source, tmp_path / "out")


def test_read_only_location_fails_the_job_with_one_line(
    system: System, small_disk: Callable[[int], SmallDisk], tmp_path: Path
) -> None:
    disk = small_disk(32)
    location = disk.path / "repo"
    source = _source(tmp_path / "src", files=2, size=MiB, seed="ro")
    _plan(system, "read-only", source, location)
    disk.remount(read_only=True)
    _failed_backup(system, "read-only", "location is read-only")
    disk.remount(read_only=False)
    _no_tracebacks(system)
    assert system.cli("backup", "read-only", "--wait").returncode == 0
    _restores_exactly(system, "read-only", source, tmp_path / "out")


def test_location_removed_mid_backup_is_never_a_snapshot(system: System, tmp_path: Path) -> None:
    location = tmp_path / "vanishing"
    source = _source(tmp_path / "src", files=4, size=MiB, seed="gone")
    _plan(system, "vanishing", source, location)
    system.holds.set("upload.record")
    backup = system.cli_start("backup", "vanishing", "--wait", "--json")
    system.holds.wait("upload.record")
    shutil.rmtree(location)  # the disk was unplugged, the folder removed
    system.holds.release()
    stdout, stderr = backup.communicate(timeout=120)
    assert backup.returncode == 1, (stdout, stderr)
    job = job_of(stdout)
    assert job is not None and str(job["error"]).startswith("location disappeared"), job
    assert not location.exists(), "the services must not recreate a removed location"
    assert _snapshots(system, "vanishing") == []
    _no_tracebacks(system)


@pytest.mark.parametrize("gone", ["config", "keys"])
def test_config_or_keys_gone_before_commit(system: System, tmp_path: Path, gone: str) -> None:
    location = tmp_path / f"repo-{gone}"
    source = _source(tmp_path / "src", files=4, size=MiB, seed=gone)
    name = f"lost-{gone}"
    _plan(system, name, source, location)
    system.holds.set("upload.record")
    backup = system.cli_start("backup", name, "--wait", "--json")
    system.holds.wait("upload.record")
    if gone == "config":
        (location / "config").unlink()
    else:
        shutil.rmtree(location / "keys")
    system.holds.release()
    stdout, stderr = backup.communicate(timeout=120)
    assert backup.returncode == 1, (stdout, stderr)
    job = job_of(stdout)
    assert job is not None and f"repository's {gone}" in str(job["error"]), job
    assert _snapshots(system, name) == []
    assert not (location / "snapshots").exists() or not list((location / "snapshots").iterdir())


def test_restore_from_a_damaged_pack_restores_the_rest_and_exits_3(system: System, tmp_path: Path) -> None:
    location = tmp_path / "repo-damaged"
    source = _source(tmp_path / "src", files=6, size=700 * 1024, seed="damage")
    _plan(system, "damaged", source, location)
    assert system.cli("backup", "damaged", "--wait").returncode == 0
    packs = sorted((p for p in (location / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    victim = packs[-1]  # the largest pack holds file data
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0xFF
    victim.write_bytes(bytes(data))

    target = tmp_path / "out"
    result = system.cli("restore", "damaged", "latest", "--target", target, "--wait")
    assert result.returncode == 3, result
    lost = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert lost and all(".bin" in line for line in lost), result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("timevault: incomplete: ")
    inside = target / source.relative_to("/")
    restored = {p.name for p in inside.iterdir()}
    named = {name for name in (p.name for p in source.iterdir()) if any(name in line for line in lost)}
    assert named and restored == {p.name for p in source.iterdir()} - named
    for name in restored:
        assert (inside / name).read_bytes() == (source / name).read_bytes()
    as_json = system.cli("restore", "damaged", "latest", "--target", tmp_path / "out2", "--wait", "--json")
    assert as_json.returncode == 3
    job = json.loads(as_json.stdout)
    assert job["status"] == "completed" and len(job["warnings"]) == len(lost), job
