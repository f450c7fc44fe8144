"""The test side of `timevault.services.common.holds`: pause services at named points.

Start the services with ``TIMEVAULT_TEST_HOLDS=<folder>``; `set` a point, `wait` until a service
holds there (you get its pid), do the damage, `release` it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Holds:
    folder: Path

    def set(self, point: str, start: int = 1) -> None:
        (self.folder / f"{point}.reached").unlink(missing_ok=True)
        (self.folder / point).write_text(str(start))

    def wait(self, point: str, seconds: float = 60) -> int:
        """Wait until a service holds at `point`; returns its pid."""
        marker = self.folder / f"{point}.reached"
        deadline = time.monotonic() + seconds
        while not marker.exists() or not marker.read_text().strip():
            if time.monotonic() > deadline:
                raise AssertionError(f"no service reached {point} within {seconds} s")
            time.sleep(0.02)
        return int(marker.read_text().split()[0])

    def release(self, point: str | None = None) -> None:
        for gate in [self.folder / point] if point else list(self.folder.iterdir()):
            gate.unlink(missing_ok=True)
