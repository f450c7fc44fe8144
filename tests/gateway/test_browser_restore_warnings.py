"""A restore that completes without some files says so in the web UI, and names them.

The largest pack of a plan's local location is damaged after the backup; the restore brings back
every file it can read and the job completes with warnings (the CLI exits 3). The dialog must not
show that as a plain success.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.gateway.conftest import PASSWORD, Stack, plan_body, source_tree
from tests.gateway.test_browser_plan_list import call, finished_job

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]


def test_restore_with_lost_files_is_shown_incomplete(browser: Browser, stack: Stack, tmp_path: Path) -> None:
    source = source_tree(tmp_path / "Documents", {f"part{i}.bin": os.urandom(700 * 1024) for i in range(6)})
    location = tmp_path / "vault"
    plan = call(stack, "POST", "/plans", plan_body("Warnings", source, location))
    try:
        assert finished_job(stack, call(stack, "POST", f"/plans/{plan['id']}/backups")["id"])["status"] == "completed"
        packs = sorted((p for p in (location / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        damaged = bytearray(packs[-1].read_bytes())  # the largest pack holds file data
        damaged[len(damaged) // 3] ^= 0xFF
        packs[-1].write_bytes(bytes(damaged))

        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{stack.url}/#token={stack.token}")
        page.goto(f"{stack.url}/#/plans/{plan['id']}")
        row = page.locator("#snapshots-body tr[data-status=completed]")
        expect(row).to_have_count(1)
        row.get_by_role("button", name="Restore").click()
        dialog = page.get_by_role("dialog", name="Restore snapshot")
        target = tmp_path / "restored"
        dialog.get_by_label("Restore into folder").fill(str(target))
        dialog.get_by_label("Backup password").fill(PASSWORD)
        dialog.get_by_role("button", name="Restore", exact=True).click()

        status = dialog.locator("#restore-status")
        expect(status).to_contain_text("Restore incomplete", timeout=60_000)
        expect(status).to_have_class("restore-status warn")
        lost = status.locator(".job-warnings li")
        expect(lost.first).to_contain_text(".bin")
        restored = {p.name for p in (target / str(source).lstrip("/")).iterdir()}
        assert restored and len(restored) < 6  # some files came back, not all
        assert lost.count() == 6 - len(restored)
        assert not errors, errors
    finally:
        call(stack, "DELETE", f"/plans/{plan['id']}")
