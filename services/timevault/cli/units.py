"""Sizes and times as the command line prints them: the same units and forms as the web UI.

Sizes are decimal (1 KB = 1000 bytes) with at most three significant figures, exactly like the
UI's `formatSize`, so a number read in one can be found in the other. Times carry seconds and
their time zone.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

_UNITS = ("KB", "MB", "GB", "TB", "PB")


def human_bytes(n: float | None) -> str:
    """'1 byte', '999 bytes', '1.2 KB', '123 KB', '4.6 GB'."""
    value = float(n or 0)
    if abs(value) < 1000:
        count = int(value)
        return "1 byte" if count == 1 else f"{count} bytes"
    unit = -1
    while abs(value) >= 1000 and unit < len(_UNITS) - 1:
        value /= 1000
        unit += 1
    return f"{value:.0f} {_UNITS[unit]}" if abs(value) >= 100 else f"{value:.1f} {_UNITS[unit]}"


def plural(count: int, word: str, words: str | None = None) -> str:
    """'1 snapshot', '2 snapshots', '0 files'."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def local_time(value: str | datetime | None, timezone: str | None = None) -> str:
    """An RFC 3339 time as 'YYYY-MM-DD HH:MM:SS ZONE', in `timezone` (IANA) or this machine's zone."""
    if not value:
        return "-"
    when = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    if when.tzinfo is None:
        return when.strftime("%Y-%m-%d %H:%M:%S")
    if timezone:
        try:
            return when.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S ") + timezone
        except (ValueError, KeyError):
            pass
    local = when.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S %Z")
