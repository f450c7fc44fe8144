"""A one-line progress bar for terminals; silent when stderr is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from timevault.cli.units import human_bytes
from timevault.core.archiver import Progress

__all__ = ["ProgressBar", "human_bytes"]


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """Renders `Progress` as: [####....]  42%  1.2 GiB/2.9 GiB  310/800 files  95.0 MiB/s  ETA 0:00:18."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.label = label
        self.width = width
        self._shown = False

    def __call__(self, progress: Progress) -> None:
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - progress.started, 1e-6)
        rate = progress.bytes_done / elapsed
        parts = [self.label]
        if progress.bytes_total:
            fraction = min(progress.bytes_done / progress.bytes_total, 1.0)
            filled = int(fraction * self.width)
            parts.append(f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:3.0f}%")
            parts.append(f"{human_bytes(progress.bytes_done)}/{human_bytes(progress.bytes_total)}")
        else:
            parts.append(human_bytes(progress.bytes_done))
        files_total = f"/{progress.files_total}" if progress.files_total is not None else ""
        parts.append(f"{progress.files_done}{files_total} files")
        parts.append(f"{human_bytes(rate)}/s")
        if progress.bytes_total and rate > 0:
            parts.append(f"ETA {_clock(max(progress.bytes_total - progress.bytes_done, 0) / rate)}")
        self.stream.write("\r\x1b[2K" + "  ".join(parts))
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
