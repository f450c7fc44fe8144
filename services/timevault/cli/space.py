"""``timevault space …``: run a Space, manage its accounts, and sign this TimeVault in to one.

Server side (on the Space's machine, with its ``--data-dir``)::

    timevault space serve --data-dir DIR [--listen HOST:PORT] [--storage LOCATION]
                          [--tls-cert FILE --tls-key FILE] [--trash-days N] [--public-url URL]
    timevault space user add NAME --data-dir DIR [--quota SIZE] [--password-file F]
    timevault space user list|remove NAME|set-quota NAME SIZE --data-dir DIR
    timevault space approve USER_CODE --url URL --user NAME [--password-file F] [--deny]

Client side (a TimeVault signing in)::

    timevault space login URL [--data-dir D] [--json]      through the running system
    timevault space login URL --token-file F [--json]      no system: the token goes to F (0600)
    timevault space logout URL [--data-dir D | --token-file F]

Building the parser imports nothing heavy: each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from timevault.cli.errors import CommandError, UsageError
from timevault.cli.parser import Subcommands

POLL_EVERY = 1.0


class SpaceCommandError(CommandError):
    """A user-facing failure of a space command (one line, exit 1)."""


@contextlib.contextmanager
def _account_errors() -> Iterator[None]:
    """The Space's account and value errors as the command line reports them (timevault.cli.exits):
    a bad value is `invalid` (exit 2), an unknown or duplicate account a failure (exit 1)."""
    from timevault.proto.errors import ServiceError
    from timevault.space.accounts import AccountError, AccountExists, AccountMissing
    from timevault.space.passwords import PasswordPolicyError
    from timevault.space.sizes import SizeError

    try:
        yield
    except SizeError as exc:
        raise ServiceError("invalid", str(exc), "quota") from exc
    except PasswordPolicyError as exc:
        raise ServiceError("invalid", str(exc), "password") from exc
    except AccountExists as exc:
        raise ServiceError("conflict", str(exc)) from exc
    except AccountMissing as exc:
        raise ServiceError("not_found", str(exc)) from exc
    except AccountError as exc:
        raise ServiceError("invalid", str(exc), "name") from exc


def _default_space_dir() -> str:
    explicit = os.environ.get("TIMEVAULT_SPACE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "timevault-space")


def _print_json(value: Any) -> None:
    print(json.dumps(value, sort_keys=True), flush=True)


# --- server ------------------------------------------------------------------------------------


async def cmd_serve(args: argparse.Namespace) -> int:
    from timevault.core.storage import LocationError
    from timevault.space.config import ConfigError, SpaceConfig, parse_listen
    from timevault.space.server import serve

    try:
        host, port = parse_listen(args.listen)
        config = SpaceConfig(
            data_dir=Path(args.data_dir).expanduser().absolute(), storage=args.storage, host=host, port=port,
            tls_cert=Path(args.tls_cert) if args.tls_cert else None,
            tls_key=Path(args.tls_key) if args.tls_key else None,
            public_url=args.public_url, trash_days=args.trash_days,
            device_expires_in=args.device_expires_in, device_interval=args.device_interval,
            janitor_every=args.janitor_every, segment_size=args.segment_mib * 1024 * 1024,
        )
        return await serve(config)
    except (ConfigError, LocationError) as exc:
        raise SpaceCommandError(str(exc)) from exc


def _read_new_password(args: argparse.Namespace) -> str:
    from timevault.cli.passwords import read_password_file
    from timevault.space.passwords import check_new_password

    path = args.password_file or os.environ.get("TIMEVAULT_SPACE_PASSWORD_FILE")
    password = read_password_file(path) if path else _prompt_twice(args.name)
    return check_new_password(password)


def _prompt_twice(name: str) -> str:
    import getpass

    from timevault.cli.errors import PasswordError

    if not sys.stdin.isatty():
        raise PasswordError("no password given: use --password-file or set TIMEVAULT_SPACE_PASSWORD_FILE")
    password = getpass.getpass(f"Password for {name}: ")
    if getpass.getpass(f"Password for {name} (again): ") != password:
        raise PasswordError("the passwords do not match")
    return password


def _quota(text: str | None) -> int | None:
    from timevault.space.sizes import parse_quota

    return parse_quota(text) if text is not None else None


def _space_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser().absolute()


def cmd_user_add(args: argparse.Namespace) -> int:
    from timevault.space.accounts import add_user, check_account_name
    from timevault.space.sizes import format_size

    with _account_errors():
        check_account_name(args.name)
        quota = _quota(args.quota)
        add_user(_space_dir(args), args.name, _read_new_password(args), quota)
    print(f"added account {args.name!r} (quota {format_size(quota)})")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    from timevault.space.accounts import list_users
    from timevault.space.sizes import format_size

    users = list_users(_space_dir(args))
    if args.json:
        _print_json([{"name": u.name, "quota": u.quota, "used": u.used,
                      "free": None if u.quota is None else max(0, u.quota - u.used),
                      "devices": u.devices, "created": u.created} for u in users])
        return 0
    if not users:
        print("no accounts")
    for u in users:
        print(f"{u.name:24}  {format_size(u.used):>10} of {format_size(u.quota):<10}  {u.devices} device(s)")
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    from timevault.space.accounts import remove_user

    with _account_errors():
        remove_user(_space_dir(args), args.name)
    print(f"removed account {args.name!r}; its devices are signed out and its objects will be removed")
    return 0


def cmd_user_set_quota(args: argparse.Namespace) -> int:
    from timevault.space.accounts import set_quota
    from timevault.space.sizes import format_size

    text = args.size if args.size is not None else args.quota
    if text is None:
        raise UsageError("give the new quota: set-quota NAME SIZE (like 60MiB, 10GiB or unlimited)",
                         prog="timevault space user set-quota")
    with _account_errors():
        quota = _quota(text)
        set_quota(_space_dir(args), args.name, quota)
    print(f"quota of {args.name!r} is now {format_size(quota)}")
    return 0


async def cmd_approve(args: argparse.Namespace) -> int:
    """What the verification page does, for scripts: sign in, then approve (or deny) the code."""
    import aiohttp

    from timevault.cli.passwords import get_password
    from timevault.core.storage.space import parse_space_url, ssl_for

    endpoint = parse_space_url(args.url)
    password = get_password(args.password_file, prompt=f"Space password for {args.user}",
                            env="TIMEVAULT_SPACE_PASSWORD_FILE")
    action = "deny" if args.deny else "approve"
    connector = aiohttp.TCPConnector(ssl=ssl_for(endpoint.base_url, endpoint.ca))
    # unsafe=True keeps the session cookie of a Space addressed by IP (127.0.0.1).
    jar = aiohttp.CookieJar(unsafe=True)
    try:
        async with aiohttp.ClientSession(connector=connector, cookie_jar=jar,
                                         timeout=aiohttp.ClientTimeout(total=60)) as http:
            session = await _post(http, endpoint.base_url + "/space/v1/session",
                                  {"user": args.user, "password": password}, {})
            result = await _post(http, endpoint.base_url + "/space/v1/device/approve",
                                 {"user_code": args.user_code, "action": action},
                                 {"X-Space-CSRF": str(session.get("csrf", ""))})
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SpaceCommandError(f"cannot reach the Space at {endpoint.base_url}: {exc}") from exc
    if args.json:
        _print_json(result)
    else:
        print(f"{result.get('status')}: {result.get('client')} (account {result.get('account')})")
    return 0


async def _post(http: Any, url: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    async with http.post(url, json=body, headers=headers) as response:
        try:
            data = await response.json(content_type=None)
        except ValueError:
            data = None
        if response.status >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else f"HTTP {response.status}"
            raise SpaceCommandError(f"the Space refused: {message}")
        return data if isinstance(data, dict) else {}


# --- client: signing in ------------------------------------------------------------------------


def _show_code(space: str, code: dict[str, Any], as_json: bool) -> None:
    """The first thing a person sees: where to go, the code, and a QR code of the address."""
    if as_json:
        _print_json({k: code[k] for k in ("user_code", "verification_uri", "verification_uri_complete",
                                          "expires_in")})
        return
    import segno

    minutes = max(1, int(code["expires_in"]) // 60)
    print(f"To sign in to the TimeVault Space at {space}, open\n\n    {code['verification_uri']}\n\n"
          f"and enter the code  {code['user_code']}\n\nor scan this QR code with your phone:\n")
    qr = segno.make(code["verification_uri_complete"], error="m")
    qr.terminal(out=sys.stdout, compact=True, border=2)
    print(f"\nWaiting for approval (the code expires in {minutes} minute{'s' if minutes != 1 else ''})…",
          flush=True)


def _finish(space: str, account: str | None, status: str, message: str | None, as_json: bool) -> int:
    if status == "signed_in":
        if as_json:
            _print_json({"space": space, "account": account, "status": "signed_in"})
        else:
            print(f"signed in to {space} as {account}")
        return 0
    if as_json:
        _print_json({"space": space, "status": status, "error": message})
    print(f"timevault: error: {message or status}", file=sys.stderr)
    return 1


_STATUS_OF = {"access_denied": "denied", "expired_token": "expired"}


async def _login_direct(args: argparse.Namespace) -> int:
    from timevault.core.storage.space import parse_space_url
    from timevault.services.common.space_signin import SignInFailed, request_code, wait_for_token

    endpoint = parse_space_url(args.url)
    target = Path(args.token_file).expanduser()
    if not target.parent.is_dir():
        raise SpaceCommandError(f"no folder {target.parent} for the token file")
    try:
        code = await request_code(endpoint)
        _show_code(endpoint.base_url, vars(code), args.json)
        signed_in = await wait_for_token(endpoint, code)
    except SignInFailed as exc:
        return _finish(endpoint.base_url, None, _STATUS_OF.get(exc.code, "failed"), exc.message, args.json)
    write_token_file(target, signed_in.token)
    return _finish(endpoint.base_url, signed_in.account, "signed_in", None, args.json)


def write_token_file(path: Path, token: str) -> None:
    """Write the token readable by its owner only (created 0600, then renamed into place)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)


def read_token_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.readline().strip()
    except OSError as exc:
        raise SpaceCommandError(f"cannot read the Space token file {path}: {exc.strerror}") from exc
    if not token:
        raise SpaceCommandError(f"the Space token file {path} is empty")
    return token


def _login_system(args: argparse.Namespace) -> int:
    from timevault.cli.system import Gateway
    from timevault.core.storage.space import parse_space_url

    space = parse_space_url(args.url).base_url
    gateway = Gateway.find(args.data_dir)
    code = gateway.call("POST", "/spaces/login", {"space": args.url})
    _show_code(space, code, args.json)
    query = f"/spaces/status?space={_quote(args.url)}"
    while True:
        time.sleep(POLL_EVERY)
        status = gateway.call("GET", query)
        if status.get("status") != "pending":
            return _finish(status.get("space") or space, status.get("account"), str(status.get("status")),
                           status.get("message"), args.json)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def cmd_login(args: argparse.Namespace) -> int:
    import asyncio

    if args.token_file:
        return asyncio.run(_login_direct(args))
    return _login_system(args)


def cmd_logout(args: argparse.Namespace) -> int:
    if args.token_file:
        import asyncio

        from timevault.core.storage.space import parse_space_url
        from timevault.services.common.space_signin import SignInFailed, revoke

        endpoint = parse_space_url(args.url)
        token = read_token_file(args.token_file)
        try:
            asyncio.run(revoke(endpoint, token))
        except SignInFailed as exc:
            raise SpaceCommandError(exc.message) from exc
        os.unlink(args.token_file)
        result: dict[str, Any] = {"space": endpoint.base_url, "status": "signed_out"}
    else:
        from timevault.cli.system import Gateway

        result = Gateway.find(args.data_dir).call("POST", "/spaces/logout", {"space": args.url})
    if args.json:
        _print_json(result)
    else:
        print(f"signed out of {result.get('space')}")
    return 0


# --- registration --------------------------------------------------------------------------------


def register(subparsers: Subcommands) -> None:
    space = subparsers.add_parser("space", help="run a TimeVault Space, manage its accounts, sign in to one")
    commands = space.add_subparsers(dest="space_command", required=True, metavar="COMMAND")

    def data_dir(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-dir", default=_default_space_dir(), metavar="DIR",
                            help="the Space's data folder (default $TIMEVAULT_SPACE_DIR or "
                                 "~/.local/share/timevault-space)")

    serve = commands.add_parser("serve", help="run a Space server")
    data_dir(serve)
    serve.add_argument("--listen", default="127.0.0.1:7490", metavar="HOST:PORT")
    serve.add_argument("--storage", metavar="LOCATION",
                       help="where objects go: a folder or s3://bucket/prefix?… (default DIR/objects)")
    serve.add_argument("--tls-cert", metavar="FILE", help="certificate chain (PEM); needed for non-loopback")
    serve.add_argument("--tls-key", metavar="FILE", help="private key (PEM)")
    serve.add_argument("--trash-days", type=float, default=7.0, metavar="N",
                       help="keep deleted objects restorable for N days (default 7)")
    serve.add_argument("--public-url", metavar="URL",
                       help="the address devices and phones use, if not the one they connect to")
    serve.add_argument("--device-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    serve.add_argument("--device-expires-in", type=float, default=600.0, help=argparse.SUPPRESS)
    serve.add_argument("--janitor-every", type=float, default=600.0, help=argparse.SUPPRESS)
    serve.add_argument("--segment-mib", type=int, default=24, help=argparse.SUPPRESS)
    serve.set_defaults(func=(cmd_serve))

    user = commands.add_parser("user", help="manage the Space's accounts")
    users = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = users.add_parser("add", help="add an account (asks for its password)")
    add.add_argument("name")
    data_dir(add)
    add.add_argument("--quota", metavar="SIZE", help="like 60MiB or 10GiB (default unlimited)")
    add.add_argument("--password-file", metavar="F",
                     help="read the password from F (else $TIMEVAULT_SPACE_PASSWORD_FILE, else prompt)")
    add.set_defaults(func=(cmd_user_add))
    lst = users.add_parser("list", help="accounts with usage, quota and devices")
    data_dir(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=(cmd_user_list))
    remove = users.add_parser("remove", help="remove an account, sign out its devices, delete its objects")
    remove.add_argument("name")
    data_dir(remove)
    remove.set_defaults(func=(cmd_user_remove))
    quota = users.add_parser("set-quota", help="change an account's quota (takes effect at once)")
    quota.add_argument("name")
    quota.add_argument("size", nargs="?", metavar="SIZE", help="like 60MiB, 10GiB, a byte count or unlimited")
    quota.add_argument("--quota", metavar="SIZE", help=argparse.SUPPRESS)
    data_dir(quota)
    quota.set_defaults(func=(cmd_user_set_quota))

    approve = commands.add_parser("approve", help="approve (or --deny) a device's sign-in code, for scripts")
    approve.add_argument("user_code", metavar="USER_CODE")
    approve.add_argument("--url", required=True, help="the Space, e.g. https://space.example.org")
    approve.add_argument("--user", required=True, metavar="NAME")
    approve.add_argument("--password-file", metavar="F",
                         help="read the password from F (else $TIMEVAULT_SPACE_PASSWORD_FILE, else prompt)")
    approve.add_argument("--deny", action="store_true", help="deny the device instead")
    approve.add_argument("--json", action="store_true")
    approve.set_defaults(func=(cmd_approve))

    login = commands.add_parser("login", help="sign this TimeVault in to a Space (QR code or user code)")
    login.add_argument("url", metavar="URL", help="the Space: https://host[:port] (http:// on loopback)")
    login.add_argument("--data-dir", default=None, help="TimeVault data dir of the running system")
    login.add_argument("--token-file", metavar="F",
                       help="no running system: write the device token to F (0600) for "
                            "`timevault repo` (TIMEVAULT_SPACE_TOKEN_FILE=F)")
    login.add_argument("--json", action="store_true", help="print JSON lines")
    login.set_defaults(func=(cmd_login))

    logout = commands.add_parser("logout", help="sign out of a Space (revokes the device token)")
    logout.add_argument("url", metavar="URL")
    logout.add_argument("--data-dir", default=None, help="TimeVault data dir of the running system")
    logout.add_argument("--token-file", metavar="F", help="revoke the token in F and remove the file")
    logout.add_argument("--json", action="store_true")
    logout.set_defaults(func=(cmd_logout))
