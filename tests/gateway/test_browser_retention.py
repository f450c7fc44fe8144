"""What a plan keeps, in headless Chromium: chosen in the create form (a monthly schedule, custom
rules), shown on the plan page and in each snapshot's row (the rule that keeps it), changed in the
edit dialog, and "Clean up now" (a prune job) saying what it did.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.gateway.conftest import Stack, source_tree
from tests.gateway.test_browser import DESKTOP, open_page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]


def quiet(stack: Stack, plan_id: str) -> None:
    """Until the plan has no pending or running job."""
    time.sleep(0.5)  # the job the click asked for exists by now
    deadline = time.monotonic() + 60
    request = urllib.request.Request(f"{stack.url}/api/v1/plans/{plan_id}/jobs?active=true", headers=stack.headers)
    while json.loads(urllib.request.urlopen(request, timeout=10).read()):
        assert time.monotonic() < deadline, "jobs still running"
        time.sleep(0.2)


def test_retention_is_chosen_shown_and_changed(browser: Browser, stack: Stack, tmp_path: Path) -> None:
    errors: list[str] = []
    src = source_tree(tmp_path / "Letters", {"a.txt": b"a" * 1000})
    page = open_page(browser, stack, DESKTOP, errors)
    page.get_by_role("main").get_by_role("link", name="Create a backup").click()
    page.get_by_label("Name").fill("Letters")
    page.get_by_label("Folders to back up").fill(str(src))
    page.get_by_label("Monthly").check()
    expect(page.get_by_label("Day of month")).to_be_visible()
    expect(page.get_by_label("Day of week")).to_be_hidden()
    page.get_by_label("Day of month").fill("31")
    page.get_by_label("Start time").fill("04:00")
    page.get_by_label("Time zone").fill("UTC")
    expect(page.get_by_label("Like Time Machine")).to_be_checked()  # the default
    expect(page.get_by_label("Newest backups")).to_be_hidden()
    page.get_by_label("Custom").check()
    page.get_by_label("Everything within").fill("soon")
    page.get_by_label("This machine's disks").check()  # TimeVault Space is the first choice
    page.get_by_label("Folder", exact=True).fill(str(tmp_path / "vault"))
    page.get_by_label("Backup password").fill("zebra-42-battery")
    page.get_by_label("Password again").fill("zebra-42-battery")
    page.get_by_role("button", name="Create backup").click()
    expect(page.locator("#f-keep_within-error")).to_contain_text("Invalid duration")  # at its field
    expect(page.get_by_label("Everything within")).to_be_focused()
    page.get_by_label("Everything within").fill("")
    page.get_by_label("Newest backups").fill("1")
    page.get_by_role("button", name="Create backup").click()

    expect(page.get_by_role("heading", name="Letters")).to_be_visible()
    expect(page.locator("#plan-schedule")).to_have_text("Monthly on day 31 at 04:00 (UTC)")
    expect(page.locator("#set-retention")).to_have_text("the newest 1")
    plan_id = page.url.rsplit("/", 1)[-1]
    for content in (b"first", b"second"):
        (src / "a.txt").write_bytes(content * 1000)
        page.get_by_role("button", name="Back up now").click()
        quiet(stack, plan_id)  # the backup, and the prune that follows it
    # The prune after the second backup forgets the first; the row says which rule keeps the other.
    rows = page.locator("#snapshots-body tr[data-status=completed]")
    expect(rows).to_have_count(1, timeout=60_000)
    expect(rows.locator("td[data-label='Kept by']")).to_have_text("last", timeout=30_000)

    page.get_by_role("button", name="Clean up now").click()
    expect(page.locator("#plan-error")).to_be_hidden()
    expect(page.locator("#toast")).to_contain_text("Cleaned up: forgot 0 backups", timeout=60_000)

    page.get_by_role("button", name="Edit settings").click()
    dialog = page.get_by_role("dialog", name="Edit settings")
    expect(dialog.get_by_label("Custom")).to_be_checked()
    expect(dialog.get_by_label("Newest backups")).to_have_value("1")
    dialog.get_by_label("Everything", exact=True).check()
    dialog.get_by_label("When the backup disk is full").check()
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#set-retention")).to_have_text(
        "Everything; the oldest go first when the disk is full")
    assert not errors, errors
    page.close()
