"""A real TimeVault Space (``timevault space serve``) in a child process, for tests and benchmarks.

Accounts are added with the same code as ``timevault space user add``; devices sign in through
the Space's own HTTP API (device code, the holder's session and approval, token), as a phone
and a TimeVault would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

from tests.support.moto_server import free_port

PASSWORD = "correct horse battery staple"


@dataclass
class SpaceServer:
    data_dir: Path
    port: int = field(default_factory=free_port)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def location(self, repo: str) -> str:
        return f"space+http://127.0.0.1:{self.port}/{repo}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-serve.log"

    def start(self, timeout: float = 30.0) -> SpaceServer:
        command = [sys.executable, "-m", "timevault.cli.main", "space", "serve", "--data-dir", str(self.data_dir),
                   "--listen", f"127.0.0.1:{self.port}", *self.args]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.env})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Space exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/space/v1/health", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the Space did not start: {self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    # --- accounts and devices ------------------------------------------------------------

    def add_user(self, name: str, quota: int | None = None, password: str = PASSWORD) -> None:
        from timevault.space.accounts import add_user

        add_user(self.data_dir, name, password, quota)

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                form: dict[str, str] | None = None, opener: urllib.request.OpenerDirector | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """One HTTP call; (status, decoded JSON body or None). Never raises for an HTTP status."""
        data = None
        all_headers = {"Accept": "application/json", **(headers or {})}
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        try:
            with (opener or urllib.request.build_opener()).open(req, timeout=30) as response:
                text = response.read()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                return exc.code, json.loads(text) if text else None
            except ValueError:
                return exc.code, text

    def holder(self, user: str, password: str = PASSWORD) -> Holder:
        """The account holder signed in to the web API (cookie session + CSRF token)."""
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        status, body = self.request("POST", "/space/v1/session", {"user": user, "password": password},
                                    opener=opener)
        if status != 200:
            raise RuntimeError(f"sign-in of {user} failed: {status} {body}")
        return Holder(self, opener, body["csrf"])

    def device_code(self, device_name: str = "test-box") -> dict[str, Any]:
        status, body = self.request("POST", "/space/v1/device/code",
                                    form={"client_id": "timevault", "device_name": device_name})
        assert status == 200, body
        return dict(body)

    def poll(self, device_code: str) -> tuple[int, Any]:
        return self.request("POST", "/space/v1/token", form={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": device_code,
            "client_id": "timevault"})

    def sign_in_device(self, user: str, device_name: str = "test-box", password: str = PASSWORD) -> str:
        """A device token for `user`, by the whole device flow."""
        code = self.device_code(device_name)
        self.holder(user, password).decide(code["user_code"], "approve")
        status, body = self.poll(code["device_code"])
        assert status == 200, body
        return str(body["access_token"])


@dataclass
class Holder:
    server: SpaceServer
    opener: urllib.request.OpenerDirector
    csrf: str

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.server.request(method, path, body, opener=self.opener, headers={"X-Space-CSRF": self.csrf})

    def decide(self, user_code: str, action: str) -> dict[str, Any]:
        status, body = self.call("POST", "/space/v1/device/approve", {"user_code": user_code, "action": action})
        assert status == 200, body
        return dict(body)


def write_token(path: Path, token: str) -> Path:
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path
