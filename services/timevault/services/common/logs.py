"""One log format for every service, `timevault up` and the gateway: text or JSON lines.

``--log-format text`` (the default) writes ``TIME SERVICE LEVEL message``; ``--log-format json``
writes one object per line: ``{"ts", "level", "service", "logger", "msg"}`` plus ``"exc"`` with
the traceback when there is one. Both go through `Redact`, which removes the credentials of any
URL (``scheme://user:password@host``) and every secret value registered with `redact`, so a
NATS password or token cannot reach a log even when a library prints the URL it was given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

FORMATS = ("text", "json")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s\"']+@")
_secrets: set[str] = set()


def redact(secret: str | None) -> None:
    """Never log `secret` (a password or token this process holds)."""
    if secret and len(secret) >= 4:
        _secrets.add(secret)


def scrub(text: str) -> str:
    """`text` without URL credentials or registered secrets."""
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class Redact(logging.Filter):
    """Scrubs each record's final message (and its traceback) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = scrub(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def default_format() -> str:
    value = os.environ.get("TIMEVAULT_LOG_FORMAT", "text").lower()
    return value if value in FORMATS else "text"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format`` (defaults from ``$TIMEVAULT_LOG_LEVEL``/``$TIMEVAULT_LOG_FORMAT``)."""
    add = parser.add_argument
    add("--log-level", default=os.environ.get("TIMEVAULT_LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING, ERROR")
    add("--log-format", choices=FORMATS, default=default_format(),
        help="text lines or JSON objects, one per line (default: $TIMEVAULT_LOG_FORMAT or text)")


def setup(service: str, level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger for `service` (replaces any handler set before)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(Redact())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    value = logging.getLevelName(str(level).upper())
    root.setLevel(value if isinstance(value, int) else logging.INFO)
