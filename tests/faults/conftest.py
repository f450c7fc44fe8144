"""The fault suite: real processes, a real nats-server, real files and real small file systems.

`small_disk` mounts a tmpfs of a given size (root only; the machine's own kernel says "No space
left on device" when it is full, and `remount(read_only=True)` makes it refuse writes); where
mounting is not allowed, the tests that need it are skipped with that reason.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


class SmallDisk:
    """A tmpfs mounted at `path`; resized or made read-only in place."""

    def __init__(self, path: Path, size_mib: int) -> None:
        self.path = path
        self.size_mib = size_mib

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _mount("-t", "tmpfs", "-o", f"size={self.size_mib}m,mode=0700", "tmpfs", str(self.path))

    def remount(self, *, size_mib: int | None = None, read_only: bool | None = None) -> None:
        options = ["remount"]
        if size_mib is not None:
            options.append(f"size={size_mib}m")
        if read_only is not None:
            options.append("ro" if read_only else "rw")
        _mount("-o", ",".join(options), str(self.path))

    def unmount(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-l", str(self.path)], check=True, capture_output=True)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def _can_mount(probe: Path) -> str | None:
    probe.mkdir(parents=True, exist_ok=True)
    try:
        _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe))
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"cannot mount a tmpfs here ({getattr(exc, 'stderr', '') or exc}); run the fault suite as root"
    subprocess.run(["umount", str(probe)], check=False, capture_output=True)
    return None


@pytest.fixture(scope="session")
def mount_problem(tmp_path_factory: pytest.TempPathFactory) -> str | None:
    return _can_mount(tmp_path_factory.mktemp("mount-probe") / "m")


@pytest.fixture
def small_disk(tmp_path: Path, mount_problem: str | None) -> Iterator[Callable[[int], SmallDisk]]:
    """Factory: ``small_disk(40)`` is a fresh 40 MiB tmpfs below tmp_path, unmounted afterwards."""
    if mount_problem:
        pytest.skip(mount_problem)
    disks: list[SmallDisk] = []

    def make(size_mib: int) -> SmallDisk:
        disk = SmallDisk(tmp_path / f"disk{len(disks)}", size_mib)
        disk.mount()
        disks.append(disk)
        return disk

    yield make
    for disk in disks:
        disk.unmount()


def temp_files(root: Path) -> list[Path]:
    """Temporary files of unfinished writes below `root` (LocalStorage names them *.tmp-*)."""
    return [p for p in root.rglob("*") if ".tmp-" in p.name]
