"""Device sign-in (RFC 8628) end to end against a real Space: approve, deny, expiry, slow_down,
and ``timevault space login --token-file`` / ``approve`` / ``logout`` as a person runs them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.space.conftest import CLI, Run
from tests.support.space_server import SpaceServer
from timevault.core.storage.space import SpaceEndpoint
from timevault.services.common.space_signin import DeviceCode, SignInFailed, wait_for_token
from timevault.space.device import USER_CODE_ALPHABET, DeviceFlows, normalize_user_code

pytestmark = [pytest.mark.space, pytest.mark.timeout(90)]

DEVICE_FIELDS = {"device_code", "user_code", "verification_uri", "verification_uri_complete", "expires_in",
                 "interval"}


def test_user_codes_are_short_unambiguous_and_case_insensitive() -> None:
    flows = DeviceFlows(expires_in=600, interval=5)
    codes = {flows.start("x")[1].user_code for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert len(code) == 8 and set(code) <= set(USER_CODE_ALPHABET)
    assert not set(USER_CODE_ALPHABET) & set("AEIOU0123456789")  # no words, no 0/O or 1/I
    assert normalize_user_code("wdjb-mjht") == "WDJBMJHT"
    assert normalize_user_code(" WDJB MJHT ") == "WDJBMJHT"
    assert normalize_user_code("WDJB-MJH0") is None
    assert normalize_user_code("WDJB") is None


def test_slow_down_adds_five_seconds_each_time() -> None:
    now = [100.0]
    flows = DeviceFlows(expires_in=600, interval=5, clock=lambda: now[0])
    device_code, _ = flows.start("x")
    assert flows.poll(device_code)[0] == "authorization_pending"
    now[0] += 2
    result, grant = flows.poll(device_code)
    assert result == "slow_down" and grant is not None and grant.interval == 10
    now[0] += 9  # still under the new interval
    assert flows.poll(device_code)[0] == "slow_down"
    assert grant.interval == 15
    now[0] += 15
    assert flows.poll(device_code)[0] == "authorization_pending"


def test_approve_end_to_end(space: SpaceServer) -> None:
    space.add_user("ann")
    code = space.device_code("ann-laptop")
    assert DEVICE_FIELDS <= set(code)
    assert code["verification_uri"] == f"{space.url}/device"
    assert code["verification_uri_complete"] == f"{space.url}/device?user_code={code['user_code']}"
    assert 590 <= code["expires_in"] <= 600 and code["interval"] == 1

    status, body = space.poll(code["device_code"])
    assert (status, body["error"]) == (400, "authorization_pending")

    holder = space.holder("ann")
    typed = code["user_code"].lower().replace("-", "")  # as someone might type it on a phone
    status, grant = holder.call("GET", f"/space/v1/device/lookup?user_code={typed}")
    assert status == 200 and grant["client"] == "TimeVault on ann-laptop"
    assert holder.decide(typed, "approve")["status"] == "approved"

    time.sleep(1.05)
    status, body = space.poll(code["device_code"])
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["account"] == "ann"
    token = body["access_token"]
    status, account = space.request("GET", "/space/v1/account", token=token)
    assert status == 200 and account["account"] == "ann"

    status, body = space.poll(code["device_code"])  # a device code is good for one token only
    assert (status, body["error"]) == (400, "invalid_grant")
    status, devices = holder.call("GET", "/space/v1/devices")
    assert [d["client"] for d in devices["devices"]] == ["TimeVault on ann-laptop"]


def test_deny(space: SpaceServer) -> None:
    space.add_user("dan")
    code = space.device_code()
    assert space.holder("dan").decide(code["user_code"], "deny")["status"] == "denied"
    status, body = space.poll(code["device_code"])
    assert (status, body["error"]) == (400, "access_denied")
    assert "error_description" in body
    status, devices = space.holder("dan").call("GET", "/space/v1/devices")
    assert devices["devices"] == []


def test_expiry(make_space: Callable[..., SpaceServer]) -> None:
    space = make_space("--device-expires-in", "1.5", "--device-interval", "1")
    space.add_user("eve")
    code = space.device_code()
    assert code["expires_in"] <= 2
    time.sleep(1.7)
    status, body = space.poll(code["device_code"])
    assert (status, body["error"]) == (400, "expired_token")
    holder = space.holder("eve")
    status, body = holder.call("GET", f"/space/v1/device/lookup?user_code={code['user_code']}")
    assert status == 404 and body["error"]["field"] == "user_code"
    status, body = holder.call("POST", "/space/v1/device/approve", {"user_code": code["user_code"],
                                                                     "action": "approve"})
    assert status == 404


def test_polling_too_fast_gets_slow_down(space: SpaceServer) -> None:
    code = space.device_code()
    assert space.poll(code["device_code"])[1]["error"] == "authorization_pending"
    assert space.poll(code["device_code"])[1]["error"] == "slow_down"
    time.sleep(1.1)  # the old interval is no longer enough: it grew by 5 s
    assert space.poll(code["device_code"])[1]["error"] == "slow_down"


async def test_client_backs_off_by_five_seconds_on_slow_down(space: SpaceServer) -> None:
    """A client whose timer fires early still ends up signed in: it adds 5 s per slow_down."""
    space.add_user("fay")
    body = space.device_code()
    code = DeviceCode(body["device_code"], body["user_code"], body["verification_uri"],
                      body["verification_uri_complete"], body["expires_in"], body["interval"])
    asked: list[float] = []
    holder = space.holder("fay")

    async def early_sleep(seconds: float) -> None:
        asked.append(seconds)
        if len(asked) == 4:
            holder.decide(code.user_code, "approve")

    signed_in = await wait_for_token(SpaceEndpoint(space.url), code, sleep=early_sleep)
    assert signed_in.account == "fay" and signed_in.token.startswith("tvs_")
    # Pending, then two slow_downs (each adding 5 s to what it waits), then approved.
    assert asked == [1, 1, 6, 11]


async def test_client_reports_denial(space: SpaceServer) -> None:
    space.add_user("gus")
    body = space.device_code()
    code = DeviceCode(body["device_code"], body["user_code"], body["verification_uri"],
                      body["verification_uri_complete"], body["expires_in"], body["interval"])
    space.holder("gus").decide(code.user_code, "deny")
    with pytest.raises(SignInFailed) as excinfo:
        await wait_for_token(SpaceEndpoint(space.url), code)
    assert excinfo.value.code == "access_denied"


def test_wrong_password_is_refused(space: SpaceServer) -> None:
    space.add_user("hal")
    status, body = space.request("POST", "/space/v1/session", {"user": "hal", "password": "not it at all"})
    assert status == 401 and body["error"]["message"] == "wrong name or password"
    status, body = space.request("POST", "/space/v1/session", {"user": "nobody", "password": "not it at all"})
    assert status == 401 and body["error"]["message"] == "wrong name or password"


def _login(space: SpaceServer, token_file: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "space", "login", space.url, "--token-file", str(token_file), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def test_cli_login_with_token_file_then_repo_then_logout(space: SpaceServer, run: Run, tmp_path: Path,
                                                         space_password_file: Path, password_file: Path,
                                                         make_tree: Callable[..., Path]) -> None:
    space.add_user("ida")
    token_file = tmp_path / "space-token"
    login = _login(space, token_file, "--json")
    assert login.stdout is not None
    first = json.loads(login.stdout.readline())
    assert set(first) == {"user_code", "verification_uri", "verification_uri_complete", "expires_in"}
    approved = run("space", "approve", first["user_code"], "--url", space.url, "--user", "ida",
                   "--password-file", str(space_password_file))
    assert approved.returncode == 0, approved.stderr
    assert "approved" in approved.stdout
    out, err = login.communicate(timeout=30)
    assert login.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"space": space.url, "account": "ida",
                                                         "status": "signed_in"}
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert space.request("GET", "/space/v1/account", token=token)[0] == 200

    # `timevault repo` reads the token from TIMEVAULT_SPACE_TOKEN_FILE.
    env = {"TIMEVAULT_SPACE_TOKEN_FILE": str(token_file), "TIMEVAULT_PASSWORD_FILE": str(password_file)}
    location = space.location("ida-docs")
    assert run("repo", "init", location, env=env).returncode == 0
    source = make_tree({"a.txt": "hello", "b/c.bin": os.urandom(300_000)})
    backup = run("repo", "backup", location, str(source), "--json", env=env)
    assert backup.returncode == 0, backup.stderr
    restored = tmp_path / "restored"
    assert run("repo", "restore", location, "latest", "--target", str(restored), env=env).returncode == 0
    assert (restored / str(source).lstrip("/") / "b/c.bin").read_bytes() == (source / "b/c.bin").read_bytes()
    without = run("repo", "snapshots", location, env={"TIMEVAULT_PASSWORD_FILE": str(password_file)})
    assert without.returncode == 1 and "TIMEVAULT_SPACE_TOKEN_FILE" in without.stderr

    logout = run("space", "logout", space.url, "--token-file", str(token_file))
    assert logout.returncode == 0, logout.stderr
    assert not token_file.exists()
    assert space.request("GET", "/space/v1/account", token=token)[0] == 401


def test_cli_login_prints_code_and_qr(space: SpaceServer, run: Run, tmp_path: Path,
                                      space_password_file: Path) -> None:
    space.add_user("jon")
    login = _login(space, tmp_path / "token")
    assert login.stdout is not None
    lines: list[str] = []
    while not any("Waiting for approval" in line for line in lines):
        lines.append(login.stdout.readline())
    text = "".join(lines)
    assert f"{space.url}/device" in text
    code = next(line.split()[-1] for line in lines if "enter the code" in line)
    assert "▀" in text or "█" in text  # the QR code, drawn with block characters
    assert run("space", "approve", code, "--url", space.url, "--user", "jon",
               "--password-file", str(space_password_file)).returncode == 0
    out, _ = login.communicate(timeout=30)
    assert login.returncode == 0 and f"signed in to {space.url} as jon" in out


def test_cli_login_denied_exits_non_zero(space: SpaceServer, run: Run, tmp_path: Path,
                                         space_password_file: Path) -> None:
    space.add_user("kim")
    token_file = tmp_path / "token"
    login = _login(space, token_file, "--json")
    assert login.stdout is not None
    first = json.loads(login.stdout.readline())
    denied = run("space", "approve", first["user_code"], "--url", space.url, "--user", "kim",
                 "--password-file", str(space_password_file), "--deny")
    assert denied.returncode == 0 and "denied" in denied.stdout
    out, err = login.communicate(timeout=30)
    assert login.returncode != 0
    assert json.loads(out.strip().splitlines()[-1])["status"] == "denied"
    assert "denied" in err and not token_file.exists()


def test_approve_with_a_wrong_password_fails_cleanly(space: SpaceServer, run: Run, tmp_path: Path) -> None:
    space.add_user("lou")
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    result = run("space", "approve", "BCDF-GHJK", "--url", space.url, "--user", "lou", "--password-file", str(wrong))
    assert result.returncode == 1
    assert result.stderr.strip() == "timevault: error: the Space refused: wrong name or password"
    assert "Traceback" not in result.stderr


def test_serve_refuses_plain_http_beyond_loopback(run: Run, tmp_path: Path) -> None:
    result = run("space", "serve", "--data-dir", str(tmp_path / "d"), "--listen", "0.0.0.0:7499", timeout=30)
    assert result.returncode != 0
    assert "loopback" in result.stderr and "--tls-cert" in result.stderr
    assert "Traceback" not in result.stderr
    assert sys.executable  # the CLI ran in this interpreter's environment
