"""Managing accounts on the Space's database (``timevault space user …``).

These work on ``<data-dir>/space.db`` directly, so they need no running server, and a running
server sees every change with its next request (quota, removal, new accounts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from timevault.space.db import SpaceDB
from timevault.space.passwords import check_new_password, hash_password

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class AccountError(ValueError):
    """A user-facing problem with an account command (a bad name)."""


class AccountExists(AccountError):
    """An account of that name exists already."""


class AccountMissing(AccountError):
    """No account has that name."""


@dataclass(frozen=True)
class AccountInfo:
    name: str
    quota: int | None
    used: int
    devices: int
    created: float


def check_account_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise AccountError("an account name is 1..64 letters, digits, '.', '_', '@' or '-', starting with a "
                           "letter or digit")
    return name


def open_db(data_dir: Path) -> SpaceDB:
    return SpaceDB(data_dir / "space.db")


def add_user(data_dir: Path, name: str, password: str, quota: int | None) -> None:
    check_account_name(name)
    check_new_password(password)
    db = open_db(data_dir)
    try:
        if db.account_by_name(name) is not None:
            raise AccountExists(f"an account named {name!r} exists already")
        db.add_account(name, hash_password(password), quota)
    finally:
        db.close()


def list_users(data_dir: Path) -> list[AccountInfo]:
    db = open_db(data_dir)
    try:
        return [AccountInfo(a.name, a.quota, a.used, devices, a.created) for a, devices in db.list_accounts()]
    finally:
        db.close()


def remove_user(data_dir: Path, name: str) -> None:
    db = open_db(data_dir)
    try:
        if not db.remove_account(name):
            raise AccountMissing(f"no account named {name!r}")
    finally:
        db.close()


def set_quota(data_dir: Path, name: str, quota: int | None) -> None:
    db = open_db(data_dir)
    try:
        if not db.set_quota(name, quota):
            raise AccountMissing(f"no account named {name!r}")
    finally:
        db.close()
