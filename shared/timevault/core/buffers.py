"""The bytes-like types that the engine passes around without copying."""

from __future__ import annotations

from typing import TypeAlias

BytesLike: TypeAlias = bytes | bytearray | memoryview
"""Any contiguous buffer of bytes: what crypto, hashing, compression and storage accept."""
