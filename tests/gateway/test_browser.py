"""The web UI in real headless Chromium against the real gateway and services.

One journey through the seed: create a backup through the form (seeing the API's messages for a
short and a mismatched password), back up now, see the snapshot with its size and status, restore
it, edit the schedule, delete the plan. Screenshots of every page, at desktop and phone width,
go to ``test-output/screenshots/``.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.gateway.conftest import Stack, source_tree

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]

DESKTOP = ViewportSize(width=1280, height=860)
PHONE = ViewportSize(width=390, height=844)


def open_page(browser: Browser, stack: Stack, viewport: ViewportSize, errors: list[str]) -> Page:
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and "Failed to load resource" not in msg.text else None)
    page.goto(f"{stack.url}/#token={stack.token}")
    expect(page.get_by_role("heading", name="Backups", exact=True)).to_be_visible()
    assert "token" not in page.url  # taken out of the address bar at once
    return page


def shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_sign_in_form(browser: Browser, stack: Stack, screenshots: Path) -> None:
    page = browser.new_page(viewport=DESKTOP)
    page.goto(stack.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, screenshots, "00-sign-in-desktop")
    page.get_by_label("Access token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-token-error")).to_have_text("That token is not accepted.")
    page.get_by_label("Access token").fill(stack.token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Backups", exact=True)).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.close()


def test_backup_journey(browser: Browser, stack: Stack, screenshots: Path, tmp_path: Path) -> None:
    errors: list[str] = []
    src = source_tree(tmp_path / "Documents", {"notes.txt": b"n" * 23_456, "photos/cat.jpg": b"\x89" * 100_000})
    repo = tmp_path / "vault"
    page = open_page(browser, stack, DESKTOP, errors)
    shot(page, screenshots, "01-plans-desktop")

    # --- create, with the API's messages for a short and a mismatched password -----------------
    page.get_by_role("main").get_by_role("link", name="Create a backup").click()
    expect(page.get_by_role("heading", name="Create a backup")).to_be_visible()
    page.get_by_label("Name").fill("My documents")
    page.get_by_label("Folders to back up").fill(str(src))
    page.get_by_label("Weekly").check()
    expect(page.get_by_label("Day of week")).to_be_visible()
    page.get_by_label("Daily").check()
    expect(page.get_by_label("Day of week")).to_be_hidden()
    page.get_by_label("Start time").fill("02:30")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    # TimeVault Space is the first choice, as in the product brief; this journey uses a folder.
    expect(page.get_by_label("TimeVault Space")).to_be_checked()
    page.get_by_label("This machine's disks").check()
    page.get_by_label("Folder", exact=True).fill(str(repo))
    page.get_by_label("Backup password").fill("abc")
    page.get_by_label("Password again").fill("abc")
    page.get_by_role("button", name="Create backup").click()
    expect(page.locator("#f-password-error")).to_have_text("Password must be at least 4 characters")
    expect(page.get_by_label("Backup password")).to_be_focused()
    expect(page.get_by_label("Backup password")).to_have_attribute("aria-invalid", "true")
    shot(page, screenshots, "02-create-short-password-desktop")

    page.get_by_label("Backup password").fill("zebra-42-battery")
    page.get_by_label("Password again").fill("zebra-42-batterie")
    page.get_by_role("button", name="Create backup").click()
    expect(page.locator("#f-password2-error")).to_have_text("Passwords do not match")
    expect(page.locator("#f-password-error")).to_be_hidden()
    shot(page, screenshots, "03-create-password-mismatch-desktop")

    page.set_viewport_size(PHONE)
    shot(page, screenshots, "03-create-password-mismatch-phone")
    page.set_viewport_size(DESKTOP)

    page.get_by_label("Password again").fill("zebra-42-battery")
    page.get_by_role("button", name="Create backup").click()

    # --- the plan page: back up now, see the snapshot -----------------------------------------
    expect(page.get_by_role("heading", name="My documents")).to_be_visible()
    expect(page.locator("#plan-schedule")).to_have_text("Every day at 02:30 (Europe/Berlin)")
    expect(page.get_by_text("No snapshots yet.")).to_be_visible()
    plan_url = page.url
    content = page.content()
    assert "zebra-42" not in content
    page.get_by_role("button", name="Back up now").click()
    row = page.locator("#snapshots-body tr[data-status=completed]")
    expect(row).to_have_count(1, timeout=60_000)
    expect(row.locator("td[data-label=Size]")).to_have_text("123 KB")  # 23,456 + 100,000 bytes
    expect(row.locator("td[data-label=Files]")).to_have_text("2")
    # Written by the services since the password was last used: shown as not yet verified.
    expect(row.locator("td[data-label=Status]")).to_have_text("Completed · not yet verified")
    expect(page.locator("#plan-status")).to_have_text("Up to date")
    expect(page.locator("#stat-count")).to_have_text("1")
    expect(page.locator("#stat-total")).to_have_text(re.compile(r"^\d+(\.\d)? KB$"))
    # A backup of a second still shows its final figures, not "Preparing…".
    expect(page.locator("#progress-title")).to_have_text("Backup completed")
    expect(page.locator("#progress-text")).to_contain_text("2 files · 123 KB")
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    shot(page, screenshots, "04-plan-with-snapshot-desktop")

    # --- restore ----------------------------------------------------------------------------
    target = tmp_path / "restored"
    row.get_by_role("button", name=re.compile("^Restore")).click()
    dialog = page.get_by_role("dialog", name="Restore snapshot")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Restore into folder").fill("/etc")
    dialog.get_by_label("Backup password").fill("zebra-42-battery")
    dialog.get_by_role("button", name="Restore", exact=True).click()
    expect(dialog.locator("#r-target-error")).to_contain_text("system folder")
    dialog.get_by_label("Restore into folder").fill(str(target))
    dialog.get_by_label("Backup password").fill("wrong-zebra")
    dialog.get_by_role("button", name="Restore", exact=True).click()
    expect(dialog.locator("#r-password-error")).to_contain_text("Wrong password")
    dialog.get_by_label("Backup password").fill("zebra-42-battery")
    dialog.get_by_role("button", name="Restore", exact=True).click()
    expect(dialog.locator("#restore-status")).to_contain_text("Restore completed", timeout=60_000)
    expect(dialog.locator("#restore-status")).to_contain_text(str(target))
    shot(page, screenshots, "05-restore-done-desktop")
    restored = target / str(src).lstrip("/")
    assert (restored / "notes.txt").read_bytes() == b"n" * 23_456
    assert (restored / "photos" / "cat.jpg").stat().st_size == 100_000
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    # The restore had the password: it endorsed the history, and the page says so.
    page.reload()
    expect(page.locator("#snapshots-body tr[data-status=completed] .endorsement")).to_have_attribute(
        "data-endorsed", "true")

    # --- edit the schedule (the name is shown, not editable) ------------------------------------
    page.get_by_role("button", name="Edit settings").click()
    dialog = page.get_by_role("dialog", name="Edit settings")
    expect(dialog.get_by_label("Name")).to_have_value("My documents")
    expect(dialog.get_by_label("Name")).not_to_be_editable()
    expect(dialog.get_by_label("Name")).to_have_attribute("tabindex", "-1")  # Tab skips it
    dialog.get_by_label("Weekly").check()
    dialog.get_by_label("Day of week").select_option(label="Friday")
    dialog.get_by_label("Start time").fill("22:15")
    shot(page, screenshots, "06-edit-schedule-desktop")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#plan-schedule")).to_have_text("Every Friday at 22:15 (Europe/Berlin)")
    next_run = datetime.fromisoformat(page.locator("#stat-next time").get_attribute("datetime") or "")
    local = next_run.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.isoweekday(), local.hour, local.minute) == (5, 22, 15), local

    # --- phone width: the same pages must stay usable ---------------------------------------
    phone = open_page(browser, stack, PHONE, errors)
    shot(phone, screenshots, "07-plans-phone")
    card = phone.locator("li.plan-card[data-plan='My documents']")
    expect(card).to_contain_text("Up to date")
    expect(card).to_contain_text("Today")
    card.get_by_role("link").click()
    expect(phone.get_by_role("heading", name="My documents")).to_be_visible()
    expect(phone.locator("#snapshots-body tr[data-status=completed]")).to_have_count(1)
    shot(phone, screenshots, "08-plan-phone")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"page is {width}px wide at phone width"
    phone.goto(f"{stack.url}/#/new")
    expect(phone.get_by_role("heading", name="Create a backup")).to_be_visible()
    shot(phone, screenshots, "09-create-phone")
    phone.close()

    # --- delete, with the warning that every snapshot goes too -----------------------------------
    page.goto(plan_url)
    page.get_by_role("button", name="Delete backup…").click()
    dialog = page.get_by_role("dialog", name="Delete this backup?")
    expect(dialog).to_contain_text("removes its only snapshot and")
    expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
    shot(page, screenshots, "10-delete-warning-desktop")
    dialog.get_by_role("button", name="Delete backup and snapshots").click()
    expect(page.get_by_role("heading", name="Backups", exact=True)).to_be_visible(timeout=60_000)
    expect(page.locator("li.plan-card[data-plan='My documents']")).to_have_count(0)
    expect(page.locator("#toast")).to_contain_text("were deleted")
    assert not any(repo.rglob("snapshots/*")), "stored snapshots remain after delete"
    shot(page, screenshots, "11-after-delete-desktop")
    assert not errors, errors
    page.close()


def test_keyboard_only_create_form(browser: Browser, stack: Stack) -> None:
    """Every control is reachable with Tab and labelled; errors move focus to the field."""
    errors: list[str] = []
    page = open_page(browser, stack, DESKTOP, errors)
    page.goto(f"{stack.url}/#/new")
    expect(page.get_by_role("heading", name="Create a backup")).to_be_visible()
    seen: list[str] = []
    for _ in range(60):
        page.keyboard.press("Tab")
        info = page.evaluate("""() => { const e = document.activeElement;
            return e ? `${e.tagName}:${e.id || e.name || e.textContent.trim()}` : ''; }""")
        seen.append(info)
        if info == "BUTTON:create-submit":
            break
    assert "INPUT:f-name" in seen and "TEXTAREA:f-sources" in seen and "INPUT:f-password2" in seen, seen
    assert seen[-1] == "BUTTON:create-submit", seen
    unlabelled = page.evaluate("""() => Array.from(document.querySelectorAll('input, select, textarea'))
        .filter(e => e.type !== 'radio' && e.type !== 'hidden' && !e.labels.length).map(e => e.id)""")
    assert unlabelled == []
    page.keyboard.press("Enter")
    expect(page.get_by_label("Name")).to_be_focused()
    expect(page.locator("#f-name-error")).to_contain_text("at least one visible character")
    assert not errors, errors
    page.close()
