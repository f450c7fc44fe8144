"""Failures the CLI reports as one line and a non-zero exit."""

from __future__ import annotations


class CommandFailed(Exception):
    """The command ran but its result is a failure (already reported); exit 1."""
