"""Byte sizes as people write them: ``60MiB``, ``10GiB``, ``1.5 GB`` or a plain byte count."""

from __future__ import annotations

import re

_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
UNLIMITED = ("unlimited", "none")


class SizeError(ValueError):
    """A size that cannot be understood."""


def parse_size(text: str) -> int:
    """Bytes for ``60MiB``, ``10GiB``, ``500MB``, ``123456`` (binary units for K/M/G/T alone)."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise SizeError(f"cannot read the size {text!r}; write it like 60MiB, 10GiB or a byte count")
    value = float(match.group(1)) * _UNITS[unit]
    if value != int(value) and unit in ("", "b"):
        raise SizeError(f"a byte count must be a whole number, got {text!r}")
    return int(value)


def parse_quota(text: str) -> int | None:
    """A quota: a size, or ``unlimited``/``none`` (None)."""
    if text.strip().lower() in UNLIMITED:
        return None
    return parse_size(text)


def format_size(n: int | None) -> str:
    """``1.5 GiB``-style text; None is ``unlimited``."""
    if n is None:
        return "unlimited"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
