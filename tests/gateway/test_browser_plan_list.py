"""The plan list in headless Chromium: every card from the one `GET /api/v1/plans` reply.

The reply carries each plan's last status and error, last snapshot time and total size, so the
page must make no request per plan; Playwright's request log shows every request the page made,
on the first render and on a refresh that a live event causes.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Request, expect

from tests.gateway.conftest import Stack, plan_body, source_tree

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]


def call(stack: Stack, method: str, path: str, body: object = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{stack.url}/api/v1{path}", data=data, method=method,
                                     headers={**stack.headers, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read() or b"null")


def finished_job(stack: Stack, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = call(stack, "GET", f"/jobs/{job_id}")
        if job["status"] in ("completed", "failed", "canceled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_plan_list_makes_no_request_per_plan(browser: Browser, stack: Stack, tmp_path: Path) -> None:
    src = source_tree(tmp_path / "Pictures", {"cat.jpg": b"\x89" * 50_000})
    done = call(stack, "POST", "/plans", plan_body("List: done", src, tmp_path / "vault-done"))
    broken = call(stack, "POST", "/plans", plan_body("List: broken", tmp_path / "gone", tmp_path / "vault-broken"))
    fresh = call(stack, "POST", "/plans", plan_body("List: fresh", src, tmp_path / "vault-fresh"))
    try:
        assert finished_job(stack, call(stack, "POST", f"/plans/{done['id']}/backups")["id"])["status"] == "completed"
        failed = finished_job(stack, call(stack, "POST", f"/plans/{broken['id']}/backups")["id"])
        assert failed["status"] == "failed" and failed["error"]

        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        requests: list[str] = []

        def log(request: Request) -> None:
            if urlsplit(request.url).path.startswith("/api/"):
                requests.append(f"{request.method} {urlsplit(request.url).path}")

        page.on("request", log)
        page.goto(f"{stack.url}/#token={stack.token}")

        card = page.locator("li.plan-card[data-plan='List: done']")
        expect(card.locator(".pill")).to_have_text("Up to date")
        expect(card.locator("dd").nth(0)).to_contain_text("Today")  # last snapshot, from last_snapshot_at
        expect(card.locator("dd").nth(2)).to_have_text(re.compile(r"^\d+(\.\d)? (bytes|KB)$"))  # total size
        expect(card.locator("dd").nth(2)).not_to_have_text("0 bytes")
        card = page.locator("li.plan-card[data-plan='List: broken']")
        expect(card.locator(".pill")).to_have_text("Last backup failed")
        expect(card.locator(".pill")).to_have_attribute("title", failed["error"])  # from last_error
        expect(card.locator("dd").nth(0)).to_have_text("None yet")
        card = page.locator("li.plan-card[data-plan='List: fresh']")
        expect(card.locator(".pill")).to_have_text("No backups yet")
        expect(card.locator("dd").nth(0)).to_have_text("None yet")
        first_render = [r for r in requests if not r.endswith("/events")]

        # A live event (the plan is paused) refreshes the list: again one request for all plans.
        call(stack, "POST", f"/plans/{fresh['id']}/pause")
        expect(card.locator(".pill")).to_have_text("Paused")
        expect(card.locator("dd").nth(1)).to_have_text("Paused")
        page.close()

        api_calls = [r for r in requests if not r.endswith("/events")]
        assert not [r for r in requests if "/snapshots" in r], requests
        assert first_render == ["GET /api/v1/plans"], requests
        assert len(api_calls) >= 2 and set(api_calls) == {"GET /api/v1/plans"}, requests
        assert not errors, errors
    finally:
        for plan in (done, broken, fresh):
            call(stack, "DELETE", f"/plans/{plan['id']}")
