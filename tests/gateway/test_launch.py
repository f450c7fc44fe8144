"""Starting the gateway: its command line, token rules, and `timevault up` launching it."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.gateway.conftest import Stack
from tests.services.conftest import ROOT
from timevault.proto.errors import ServiceError
from timevault.services.common.natsd import free_port
from timevault.services.gateway.config import ConfigError, GatewayConfig, load_token, parse_listen
from timevault.services.gateway.security import bearer_ok, check_restore_target

pytestmark = pytest.mark.timeout(90)


def test_listen_and_token_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_listen("127.0.0.1:7480") == ("127.0.0.1", 7480)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("7480", "host:", ":80", "host:http"):
        with pytest.raises(ConfigError):
            parse_listen(bad)
    token_file = tmp_path / "token"
    token_file.write_text("t" * 32 + "\n")
    token_file.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_token(str(token_file))
    token_file.chmod(0o600)
    assert load_token(str(token_file)) == "t" * 32
    info = tmp_path / "gateway.json"
    info.write_text(json.dumps({"url": "http://x", "token": "u" * 32}))
    info.chmod(0o600)
    assert load_token(str(info)) == "u" * 32
    monkeypatch.delenv("TIMEVAULT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="no access token"):
        load_token(None)
    monkeypatch.setenv("TIMEVAULT_TOKEN", "v" * 32)
    assert load_token(None) == "v" * 32
    with pytest.raises(ConfigError, match="at least"):
        GatewayConfig(nats_url="nats://x", token="short")
    assert GatewayConfig(nats_url="nats://x", token="v" * 32).host == "127.0.0.1"  # loopback by default


def test_bearer_comparison() -> None:
    key = b"s" * 32
    assert bearer_ok("Bearer " + "s" * 32, key)
    assert not bearer_ok("Bearer " + "s" * 31, key)
    assert not bearer_ok("Token " + "s" * 32, key)
    assert not bearer_ok(None, key)
    assert not bearer_ok("Bearer " + "é" * 32, key)


def test_restore_target_rules(tmp_path: Path) -> None:
    assert check_restore_target(str(tmp_path / "a" / ".." / "b")) == str(tmp_path / "b")
    assert check_restore_target("/home/me/Restored") == "/home/me/Restored"
    (tmp_path / "link").symlink_to("/etc")
    for bad in ("/", "//", "/etc", "/usr/lib", "/var/lib/x", "/proc/self", str(tmp_path / "link" / "x"), "x",
                "/tmp/\x00"):
        with pytest.raises(ServiceError, match=r"target|restore"):
            check_restore_target(bad)


def test_gateway_refuses_to_start_without_a_private_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TIMEVAULT_TOKEN"} | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "timevault.services.gateway", "--listen", "127.0.0.1:0"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "no access token" in out.stderr
    token_file = tmp_path / "token"
    token_file.write_text("t" * 32)
    token_file.chmod(0o644)
    out = subprocess.run([sys.executable, "-m", "timevault.services.gateway", "--token-file", str(token_file)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "chmod 600" in out.stderr


def test_passwords_stay_out_of_logs_and_catalog(stack: Stack, tmp_path: Path) -> None:
    """Create a plan and a restore through the gateway process, then look for the password everywhere."""
    secret = "pw-" + os.urandom(8).hex()
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    body = {"name": f"secret-{secret[-6:]}", "sources": [str(src)],
            "schedule": {"frequency": "daily", "time": "01:00"}, "location": {"type": "local",
                                                                               "path": str(tmp_path / "repo")},
            "password": secret, "password_confirm": secret}
    plan = _call(stack, "POST", "/api/v1/plans", body)
    assert secret not in json.dumps(plan)
    bad = _call(stack, "POST", "/api/v1/plans", {**body, "password_confirm": secret + "x"}, expect=400)
    assert secret not in json.dumps(bad)
    job = _call(stack, "POST", f"/api/v1/plans/{plan['id']}/backups", expect=202)
    deadline = time.monotonic() + 30
    while _call(stack, "GET", f"/api/v1/jobs/{job['id']}")["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    _call(stack, "POST", f"/api/v1/plans/{plan['id']}/snapshots/latest/restore",
          {"target": str(tmp_path / "out"), "password": secret}, expect=202)
    _call(stack, "DELETE", f"/api/v1/plans/{plan['id']}")
    for path in stack.root.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert secret.encode() not in path.read_bytes(), f"password found in {path}"


def _call(stack: Stack, method: str, path: str, body: object = None, expect: int | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(stack.url + path, data=data, method=method,
                                 headers={**stack.headers, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, text = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()
    assert status == (expect or (201 if method == "POST" and path == "/api/v1/plans" else 200)), text
    return json.loads(text)


def test_timevault_up_starts_the_gateway(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from timevault.cli.main import main; sys.exit(main(sys.argv[1:]))",
         "up", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        info_path = data / "gateway.json"
        deadline = time.monotonic() + 30
        while not info_path.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        info = json.loads(info_path.read_text())
        assert info["url"] == f"http://127.0.0.1:{port}"
        plans = None
        while plans is None:
            try:
                req = urllib.request.Request(info["url"] + "/api/v1/plans",
                                             headers={"Authorization": f"Bearer {info['token']}"})
                with urllib.request.urlopen(req, timeout=2) as resp:
                    plans = json.loads(resp.read())
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline + 30, (data / "logs" / "gateway.log").read_text()
                time.sleep(0.2)
        assert plans == []
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(info["url"] + "/api/v1/plans", timeout=5)
        assert err.value.code == 401
        with urllib.request.urlopen(info["url"] + "/", timeout=5) as resp:
            assert b"TimeVault" in resp.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read().decode() if proc.stderr else ""
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert info["token"] not in stderr  # not a terminal: the output may end up in a log
    assert "sign in with the token in" in stderr
    token_file = data / "token"
    assert token_file.read_text().strip() == info["token"] and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    # A restart keeps the token, so a browser that signed in stays signed in.
    from timevault.cli.up import persistent_token

    assert persistent_token(data) == info["token"]
    token_file.chmod(0o644)  # readable by others: no longer trusted, a new one is made
    assert persistent_token(data) != info["token"] and stat.S_IMODE(token_file.stat().st_mode) == 0o600
