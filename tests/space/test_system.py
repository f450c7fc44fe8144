"""A Space as a plan's location, through the running system (`timevault up`): the catalog keeps the
device token, plans need a sign-in, `timevault space login` goes through the gateway, and a
revoked token shows as "signed out of Space" until this TimeVault signs in again."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.space.conftest import CLI, Run
from tests.support.space_server import SpaceServer

pytestmark = [pytest.mark.space, pytest.mark.timeout(240)]


@dataclass
class System:
    data_dir: Path
    url: str
    token: str

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + "/api/v1" + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """`timevault up` in a child process (its own nats-server, catalog, services and gateway)."""
    data = tmp_path_factory.mktemp("tv") / "data"
    proc = subprocess.Popen([*CLI, "up", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (data / "gateway.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "timevault up did not start"
            time.sleep(0.1)
        info = json.loads((data / "gateway.json").read_text())
        yield System(data, info["url"], info["token"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def login(system: System, space: SpaceServer, run: Run, password_file: Path, *, deny: bool = False,
          user: str = "olga") -> tuple[int, list[dict[str, Any]]]:
    """`timevault space login URL --json` through the system, approved (or denied) by the holder."""
    proc = subprocess.Popen([*CLI, "space", "login", space.url, "--data-dir", str(system.data_dir), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    extra = ["--deny"] if deny else []
    decided = run("space", "approve", first["user_code"], "--url", space.url, "--user", user,
                  "--password-file", str(password_file), *extra)
    assert decided.returncode == 0, decided.stderr
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, [first, *(json.loads(line) for line in out.splitlines() if line.strip())]


def test_plans_on_a_space(system: System, make_space: Any, run: Run, tmp_path: Path, password_file: Path,
                          space_password_file: Path) -> None:
    space: SpaceServer = make_space("--device-interval", "1")
    space.add_user("olga", quota=200 * 1024 * 1024)
    tv = ["--data-dir", str(system.data_dir)]
    source = tmp_path / "Documents"
    source.mkdir()
    (source / "letter.txt").write_text("to the Space\n")
    (source / "photo.raw").write_bytes(os.urandom(2_000_000))
    location = space.location("documents")

    # Not signed in yet: a clear 400 from the API and one line from the CLI.
    status, body = system.api("POST", "/plans", {
        "name": "Documents", "sources": [str(source)], "schedule": {"frequency": "daily", "time": "03:00"},
        "location": {"type": "space", "url": location}, "password": "correct horse", "password_confirm":
        "correct horse"})
    assert status == 400 and body["error"]["field"] == "location"
    assert body["error"]["message"].startswith("sign in to this Space first")
    refused = run("plan", "create", "Documents", "--source", str(source), "--daily", "--at", "03:00",
                  "--location", location, "--password-file", str(password_file), *tv)
    assert refused.returncode == 2 and "sign in to this Space first" in refused.stderr  # the 400: exit 2
    assert system.api("GET", f"/spaces/status?space={space.url}")[1]["status"] == "signed_out"

    # Sign in through the system; the catalog keeps the token.
    code, lines = login(system, space, run, space_password_file)
    assert code == 0
    assert set(lines[0]) == {"user_code", "verification_uri", "verification_uri_complete", "expires_in"}
    assert lines[-1] == {"space": space.url, "account": "olga", "status": "signed_in"}
    status, spaces = system.api("GET", "/spaces")
    assert status == 200
    (signed_in,) = spaces
    assert signed_in["status"] == "signed_in" and signed_in["account"] == "olga"
    assert signed_in["quota"] == 200 * 1024 * 1024 and signed_in["free"] == signed_in["quota"] - signed_in["used"]
    with sqlite3.connect(system.data_dir / "catalog.db") as conn:
        stored = conn.execute("SELECT account, token FROM space_signins").fetchall()
    assert len(stored) == 1 and stored[0][0] == "olga" and stored[0][1].startswith("tvs_")
    assert b"correct horse" not in (system.data_dir / "catalog.db").read_bytes()

    created = run("plan", "create", "Documents", "--source", str(source), "--daily", "--at", "03:00",
                  "--location", location, "--password-file", str(password_file), "--json", *tv)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["location"] == {"type": "space", "url": location, "path": None,
                                                       "bucket": None, "prefix": None, "endpoint": None,
                                                       "region": None}
    backup = run("backup", "Documents", "--wait", *tv)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    target = tmp_path / "restored"
    restore = run("restore", "Documents", "latest", "--target", str(target), "--password-file", str(password_file),
                  "--wait", *tv)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert (target / str(source).lstrip("/") / "photo.raw").read_bytes() == (source / "photo.raw").read_bytes()
    usage = space.request("GET", "/space/v1/account", token=stored[0][1])[1]
    assert usage["repos"][0]["name"] == "documents" and usage["repos"][0]["size"] > 2_000_000

    # The holder revokes this TimeVault on the Space: the plan's next backup says so.
    holder = space.holder("olga")
    (device,) = holder.call("GET", "/space/v1/devices")[1]["devices"]
    assert holder.call("DELETE", f"/space/v1/devices/{device['id']}")[0] == 204
    status, state = system.api("GET", f"/spaces/status?space={space.url}")
    assert state["status"] == "signed_out" and "signed out of Space" in state["message"]
    failed = run("backup", "Documents", "--wait", *tv)
    assert failed.returncode == 1 and "signed out of Space" in failed.stderr
    plan = json.loads(run("plan", "show", "Documents", "--json", *tv).stdout)
    assert "signed out of Space" in plan["last_error"]

    # Signing in again is all it takes.
    code, lines = login(system, space, run, space_password_file)
    assert code == 0 and lines[-1]["status"] == "signed_in"
    again = run("backup", "Documents", "--wait", *tv)
    assert again.returncode == 0, again.stdout + again.stderr

    logout = run("space", "logout", space.url, "--json", *tv)
    assert logout.returncode == 0, logout.stderr
    assert json.loads(logout.stdout)["status"] == "signed_out"
    assert holder.call("GET", "/space/v1/devices")[1]["devices"] == []  # revoked on the Space too
    assert run("plan", "delete", "Documents", "--yes", *tv).returncode == 0


def test_denied_sign_in(system: System, make_space: Any, run: Run, space_password_file: Path) -> None:
    space: SpaceServer = make_space("--device-interval", "1")
    space.add_user("olga")
    code, lines = login(system, space, run, space_password_file, deny=True)
    assert code != 0
    assert lines[-1]["status"] == "denied"
    assert system.api("GET", f"/spaces/status?space={space.url}")[1]["status"] == "denied"


def test_sign_in_api_validation(system: System) -> None:
    status, body = system.api("POST", "/spaces/login", {"space": "ftp://example.org"})
    assert status == 400 and body["error"]["field"] == "space"
    status, body = system.api("POST", "/spaces/login", {"space": "http://example.org"})
    assert status == 400 and "loopback" in body["error"]["message"]
    status, body = system.api("GET", "/spaces/status")
    assert status == 400 and body["error"]["field"] == "space"


@pytest.mark.browser
def test_web_ui_signs_in_with_a_qr_code(system: System, make_space: Any, tmp_path: Path, test_output_dir: Path) -> None:
    """The TimeVault web UI: Space is the first location choice; Sign in shows the QR code and the
    user code, then the account and its free space; a revoked token shows "signed out of Space"."""
    from playwright.sync_api import expect, sync_playwright

    from tests.gateway.conftest import CHROMIUM, chromium_args

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    shots = test_output_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    space: SpaceServer = make_space("--device-interval", "1")
    space.add_user("uli", quota=100 * 1024 * 1024)
    source = tmp_path / "Pictures"
    source.mkdir()
    (source / "cat.jpg").write_bytes(os.urandom(50_000))
    holder = space.holder("uli")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=chromium_args())
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{system.url}/#token={system.token}")
        expect(page.get_by_role("heading", name="Backups", exact=True)).to_be_visible()
        page.goto(f"{system.url}/#/new")
        expect(page.get_by_role("heading", name="Create a backup")).to_be_visible()
        radios = page.locator("input[name=location_type]")
        assert radios.first.get_attribute("value") == "space"
        expect(page.get_by_label("TimeVault Space")).to_be_checked()
        expect(page.get_by_label("Folder", exact=True)).to_be_hidden()

        page.get_by_label("Space address").fill(space.url)
        page.get_by_label("Space address").press("Tab")
        expect(page.locator("#space-state")).to_have_text("Not signed in.")
        page.get_by_role("button", name="Sign in", exact=True).click()
        qr = page.get_by_alt_text("QR code: scan it with your phone to sign in")
        expect(qr).to_be_visible()
        page.wait_for_function("() => document.querySelector('.space-qr').complete")
        assert qr.evaluate("img => img.naturalWidth") > 100  # the SVG drew, it is not a broken image
        code = page.locator("#space-user-code").inner_text()
        assert len(code) == 9 and code[4] == "-"
        page.screenshot(path=str(shots / "space-ui-01-sign-in-qr.png"), full_page=True)
        holder.decide(code, "approve")
        expect(page.locator("#space-state")).to_have_text("Signed in as uli · 105 MB free")
        expect(page.locator("#space-signin")).to_be_hidden()

        page.get_by_label("Name", exact=True).fill("UI pictures")
        page.get_by_label("Folders to back up").fill(str(source))
        page.get_by_label("Start time").fill("04:00")
        page.get_by_label("Backup password").fill("correct horse")
        page.get_by_label("Password again").fill("correct horse")
        page.screenshot(path=str(shots / "space-ui-02-signed-in.png"), full_page=True)
        page.get_by_role("button", name="Create backup").click()
        expect(page.get_by_role("heading", name="UI pictures")).to_be_visible()
        expect(page.locator("#set-location")).to_have_text(space.location("ui-pictures"))
        expect(page.locator("#space-out")).to_be_hidden()

        # The account holder revokes this TimeVault on the Space's pages.
        (device,) = holder.call("GET", "/space/v1/devices")[1]["devices"]
        holder.call("DELETE", f"/space/v1/devices/{device['id']}")
        page.reload()
        notice = page.locator("#space-out")
        expect(notice).to_contain_text("Signed out of Space")
        page.screenshot(path=str(shots / "space-ui-03-signed-out.png"), full_page=True)
        page.get_by_role("button", name="Sign in again").click()
        code = page.locator("#space-user-code").inner_text()
        holder.decide(code, "approve")
        expect(notice).to_contain_text("Signed in as uli")
        browser.close()
    assert errors == []
    status, plans = system.api("GET", "/plans")
    assert status == 200
    plan_id = next(p["id"] for p in plans if p["name"] == "UI pictures")
    assert system.api("DELETE", f"/plans/{plan_id}")[0] == 200
