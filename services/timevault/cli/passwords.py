"""Where passwords come from: a file, an environment variable naming a file, or a prompt.

Never from argv (visible to every user in `ps`), never echoed, never logged.
"""

from __future__ import annotations

import getpass
import os
import sys

from timevault.cli.errors import PasswordError

__all__ = ["PasswordError", "check_password", "get_password", "read_password_file"]


def check_password(password: str) -> None:
    """The repository's rule for new passwords (imported here only when a password is set:
    it loads the crypto stack, which `timevault restore` through the services does not need)."""
    from timevault.core.repository.keys import check_password as check

    check(password)


def read_password_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline()
    except OSError as exc:
        raise PasswordError(f"cannot read password file {path}: {exc.strerror}") from exc
    password = line.rstrip("\r\n")
    if not password:
        raise PasswordError(f"password file {path} is empty")
    return password


def get_password(
    password_file: str | None,
    *,
    confirm: bool = False,
    prompt: str = "Password",
    env: str = "TIMEVAULT_PASSWORD_FILE",
) -> str:
    """The password from --password-file, else $env (a file path), else a prompt (twice if confirm)."""
    path = password_file or os.environ.get(env)
    if path:
        password = read_password_file(path)
    else:
        if not sys.stdin.isatty():
            raise PasswordError("no password given: use --password-file or set " + env)
        password = getpass.getpass(f"{prompt}: ")
        if confirm:
            check_password(password)
            if getpass.getpass(f"{prompt} (again): ") != password:
                raise PasswordError("the passwords do not match")
    if confirm:
        check_password(password)
    return password
