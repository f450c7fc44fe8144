"""The Time Machine in headless Chromium: the timeline, walking folders, what changed, restoring a
single file back to its place beside a conflicting one, excludes, the folder picker, and a form
that shows every mistake at once."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.gateway.conftest import PASSWORD, Stack, plan_body, source_tree

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

DESKTOP = ViewportSize(width=1280, height=900)
PHONE = ViewportSize(width=390, height=844)


def api(stack: Stack, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(stack.url + "/api/v1" + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={**stack.headers, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read() or b"null")


def backup(stack: Stack, plan_id: str) -> dict[str, Any]:
    job = api(stack, "POST", f"/plans/{plan_id}/backups")
    deadline = time.monotonic() + 90
    while True:
        job = api(stack, "GET", f"/jobs/{job['id']}")
        if job["status"] in ("completed", "failed", "canceled"):
            assert job["status"] == "completed", job
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def open_page(browser: Browser, stack: Stack, errors: list[str], hash_: str = "#/",
              viewport: ViewportSize = DESKTOP) -> Page:
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and "Failed to load resource" not in msg.text else None)
    page.goto(f"{stack.url}/#token={stack.token}")
    expect(page.get_by_role("heading", name="Backups", exact=True)).to_be_visible()
    if hash_ != "#/":
        page.goto(f"{stack.url}/{hash_}")
    return page


def shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_timeline_browse_and_restore_a_file_beside_the_new_one(browser: Browser, stack: Stack, screenshots: Path,
                                                                tmp_path: Path) -> None:
    src = source_tree(tmp_path / "Home", {"docs/notes.txt": b"version one", "docs/report.pdf": b"%PDF" * 500,
                                          "photos/cat.jpg": b"\x89" * 2000, "todo.txt": b"milk"})
    plan = api(stack, "POST", "/plans", plan_body("Time machine", src, tmp_path / "vault"))
    first = backup(stack, plan["id"])
    (src / "docs" / "notes.txt").write_text("version two, edited later")
    (src / "photos" / "dog.jpg").write_bytes(b"dog" * 10)
    (src / "todo.txt").unlink()
    backup(stack, plan["id"])

    errors: list[str] = []
    page = open_page(browser, stack, errors, f"#/plans/{plan['id']}")
    page.get_by_role("link", name="Browse and restore files").click()
    expect(page.get_by_role("heading", name="Unlock the snapshots")).to_be_visible()
    page.get_by_label("Backup password").fill("not it")
    page.get_by_role("button", name="Unlock").click()
    expect(page.locator("#u-password-error")).to_have_text("Wrong password")
    shot(page, screenshots, "20-browse-unlock-desktop")
    page.get_by_label("Backup password").fill(PASSWORD)
    page.get_by_role("button", name="Unlock").click()

    # The timeline: two points, newest first and chosen; its folder and what changed.
    points = page.locator("#timeline .point")
    expect(points).to_have_count(2)
    expect(points.nth(0)).to_have_attribute("aria-pressed", "true")
    expect(points.nth(0)).to_contain_text("latest")
    expect(points.nth(0).locator("time")).to_have_text(re.compile(r"\d\d:\d\d:\d\d"))  # with seconds
    expect(page.locator("#breadcrumb")).to_contain_text("Home")
    rows = page.locator("#files-body tr")
    expect(rows).to_have_count(2)  # docs, photos (todo.txt is gone in the latest)
    changes = page.locator("#changes-list")
    expect(changes.locator("li[data-what=content]")).to_contain_text(f"{src}/docs/notes.txt")
    expect(changes.locator("li[data-what=added]")).to_contain_text("dog.jpg")
    expect(changes.locator("li[data-what=removed]")).to_contain_text("todo.txt")
    expect(page.locator("#changes-summary")).to_contain_text("1 added")
    shot(page, screenshots, "21-browse-latest-desktop")

    # Back in time: the first snapshot, into docs/, tick notes.txt.
    points.nth(1).click()
    expect(points.nth(1)).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#changes-summary")).to_have_text("The first snapshot: everything in it was new.")
    expect(rows).to_have_count(3)
    expect(page.locator("#files-body tr[data-entry='todo.txt']")).to_be_visible()
    page.locator("#files-body").get_by_role("button", name="docs/").click()
    expect(page.locator("#breadcrumb [aria-current=location]")).to_have_text("docs")
    expect(rows).to_have_count(2)
    notes = page.locator("#files-body tr[data-entry='notes.txt']")
    expect(notes.locator("td[data-label=Size]")).to_have_text("11 bytes")
    notes.get_by_role("checkbox", name="Select notes.txt").check()
    expect(page.locator("#selection-count")).to_have_text("1 item selected")
    shot(page, screenshots, "22-browse-selected-desktop")

    # Back to its place, while a newer notes.txt is there: it is kept, the old one lands beside it.
    page.get_by_role("button", name="Restore to original place").click()
    status = page.locator("#items-status")
    expect(status).to_contain_text("Restored 1 item back to where they were", timeout=60_000)
    expect(status).to_contain_text("kept what is there")
    shot(page, screenshots, "23-browse-restored-desktop")
    assert (src / "docs" / "notes.txt").read_text() == "version two, edited later"
    beside = [p for p in (src / "docs").iterdir() if p.name.startswith("notes (restored ")]
    assert len(beside) == 1 and beside[0].read_text() == "version one", os.listdir(src / "docs")
    expect(status).to_contain_text(beside[0].name)
    assert first["snapshot_id"]

    # Up, and into a chosen folder: a whole folder by its name.
    page.get_by_role("button", name="Up one folder").click()
    page.locator("#files-body tr[data-entry='photos']").get_by_role("checkbox").check()
    target = tmp_path / "Picked"
    page.get_by_label("Or restore into folder").fill(str(target))
    page.get_by_role("button", name="Restore here").click()
    expect(status).to_contain_text(f"into {target}", timeout=60_000)
    expect(status).to_contain_text("Restored")
    assert (target / "photos" / "cat.jpg").read_bytes() == b"\x89" * 2000

    # Find a name in every snapshot.
    page.get_by_label("Name", exact=True).fill("notes")
    page.get_by_role("button", name="Find", exact=True).click()
    found = page.locator(f"#find-results > li[data-path='{src}/docs/notes.txt']")
    expect(found.locator(".versions li")).to_have_count(2)

    # At phone width it stays usable.
    page.set_viewport_size(PHONE)
    shot(page, screenshots, "24-browse-phone")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"page is {width}px wide at phone width"
    page.set_viewport_size(DESKTOP)

    # Lock: the form comes back, and the key is gone from the restorer.
    page.get_by_role("button", name="Lock").click()
    expect(page.get_by_role("heading", name="Unlock the snapshots")).to_be_visible()
    expect(page.locator("#unlock-note")).to_contain_text("Locked")
    assert not errors, errors
    page.close()


def test_browse_link_works_before_the_plan_has_loaded(browser: Browser, stack: Stack, tmp_path: Path) -> None:
    """The plan page's "Browse and restore files" leads to the browser even when it is clicked
    before the plan's details arrive (it once pointed at the plan list until then)."""
    src = source_tree(tmp_path / "Early", {"a.txt": b"a"})
    plan = api(stack, "POST", "/plans", plan_body("Early click", src, tmp_path / "vault"))
    errors: list[str] = []
    page = open_page(browser, stack, errors)
    held: list[Any] = []
    # The real gateway answers; only the plan page's first request for the plan waits for the click.
    page.route(f"**/api/v1/plans/{plan['id']}", lambda route: held.append(route) if not held else route.continue_())
    page.goto(f"{stack.url}/#/plans/{plan['id']}")
    expect(page.locator("#btn-browse")).to_be_visible()
    for _ in range(200):  # the request is held: the plan has not loaded, the click comes first
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1
    page.locator("#btn-browse").click()
    expect(page.get_by_role("heading", name="Unlock the snapshots")).to_be_visible()
    held[0].continue_()
    expect(page.get_by_role("heading", name="Unlock the snapshots")).to_be_visible()
    assert not errors, errors
    page.close()


def test_form_shows_every_mistake_at_once_and_clears_each(browser: Browser, stack: Stack, screenshots: Path) -> None:
    errors: list[str] = []
    page = open_page(browser, stack, errors, "#/new")
    expect(page.get_by_role("heading", name="Create a backup")).to_be_visible()
    page.get_by_label("This machine's disks").check()  # TimeVault Space is the first choice
    page.get_by_label("Backup password").fill("abc")
    page.get_by_role("button", name="Create backup").click()
    for field in ("f-name", "f-sources", "f-path", "f-password"):
        expect(page.locator(f"#{field}-error")).to_be_visible()
    expect(page.locator("#f-password-error")).to_have_text("Password must be at least 4 characters")
    expect(page.get_by_label("Name")).to_be_focused()
    shot(page, screenshots, "25-create-all-errors-desktop")
    page.get_by_label("Name").fill("Fixed")
    expect(page.locator("#f-name-error")).to_be_hidden()
    expect(page.locator("#f-sources-error")).to_be_visible()  # the others stay until fixed
    page.get_by_label("Folders to back up").fill("relative/path")
    expect(page.locator("#f-sources-error")).to_contain_text("absolute")
    page.get_by_label("Folders to back up").fill("/srv/data")
    expect(page.locator("#f-sources-error")).to_be_hidden()
    page.get_by_label("Backup password").fill("long enough")
    expect(page.locator("#f-password-error")).to_be_hidden()
    expect(page.locator("#f-path-error")).to_be_visible()
    assert not errors, errors
    page.close()


def test_create_with_the_folder_picker_and_excludes(browser: Browser, stack: Stack, screenshots: Path,
                                                    tmp_path: Path) -> None:
    src = source_tree(tmp_path / "Documents", {"letter.txt": b"dear", "draft.tmp": b"scratch",
                                               "cache/CACHEDIR.TAG": b"Signature: 8a477f597d28d172789f06886806bc55",
                                               "cache/blob.bin": b"x" * 100, "build/out.o": b"o"})
    (tmp_path / "Music").mkdir()
    errors: list[str] = []
    page = open_page(browser, stack, errors, "#/new")
    page.get_by_label("Name").fill("Picked with the picker")
    page.get_by_role("button", name="Choose folders…").click()
    picker = page.get_by_role("dialog", name="Choose folders to back up")
    expect(picker).to_be_visible()
    # From the roots down to tmp_path, one folder at a time.
    root = Path(picker.locator("#folders-list li").first.get_attribute("data-folder") or "")
    assert tmp_path.is_relative_to(root), (root, tmp_path)
    picker.locator("#folders-list li").first.get_by_role("button").click()
    for part in tmp_path.relative_to(root).parts:
        picker.locator(f"#folders-list li[data-folder='{part}']").get_by_role("button").click()
    expect(picker.locator("#folders-path")).to_have_text(str(tmp_path))
    expect(picker.locator("#folders-list li")).to_have_count(2)  # Documents, Music: folders only
    shot(page, screenshots, "26-folder-picker-desktop")
    picker.get_by_role("checkbox", name=f"Back up {src}").check()
    expect(picker.locator("#folders-chosen")).to_have_text("1 folder chosen")
    picker.get_by_role("button", name="Add chosen folders").click()
    expect(picker).to_be_hidden()
    expect(page.get_by_label("Folders to back up", exact=True)).to_have_value(str(src))
    page.get_by_label("Leave out").fill("*.tmp\nbuild/")
    expect(page.get_by_label("Skip cache folders")).to_be_checked()
    page.get_by_label("This machine's disks").check()  # TimeVault Space is the first choice
    page.get_by_label("Folder", exact=True).fill(str(tmp_path / "vault"))
    page.get_by_label("Backup password").fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create backup").click()
    expect(page.get_by_role("heading", name="Picked with the picker")).to_be_visible()
    expect(page.locator("#set-excludes")).to_contain_text("*.tmp")
    expect(page.locator("#set-excludes")).to_contain_text("Cache folders")
    page.get_by_role("button", name="Back up now").click()
    expect(page.locator("#snapshots-body tr[data-status=completed]")).to_have_count(1, timeout=60_000)
    expect(page.locator("#snapshots-body td[data-label=Files]")).to_have_text("2")  # letter.txt, CACHEDIR.TAG
    page.get_by_role("link", name="Browse and restore files").click()
    page.get_by_label("Backup password").fill(PASSWORD)
    page.get_by_role("button", name="Unlock").click()
    rows = page.locator("#files-body tr")
    expect(rows).to_have_count(2)
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.entry)")) == ["cache", "letter.txt"]
    page.locator("#files-body").get_by_role("button", name="cache/").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-entry", "CACHEDIR.TAG")
    shot(page, screenshots, "27-excluded-left-out-desktop")
    assert not errors, errors
    page.close()


def test_plan_page_shows_the_last_notification(browser: Browser, stack: Stack, tmp_path: Path) -> None:
    from timevault.services.common.natsd import free_port

    closed = free_port()  # nobody listens: every attempt is refused
    plan = api(stack, "POST", "/plans", plan_body("Notified", tmp_path / "gone", tmp_path / "vault",
                                                  notify=[f"http://127.0.0.1:{closed}/hook"],
                                                  pre_command="echo dumping", post_command="echo done"))
    job = api(stack, "POST", f"/plans/{plan['id']}/backups")
    deadline = time.monotonic() + 60
    while api(stack, "GET", f"/plans/{plan['id']}").get("notify_last") is None:
        assert time.monotonic() < deadline, api(stack, "GET", f"/jobs/{job['id']}")
        time.sleep(0.2)
    errors: list[str] = []
    page = open_page(browser, stack, errors, f"#/plans/{plan['id']}")
    expect(page.locator("#set-notify")).to_contain_text(f"http://127.0.0.1:{closed}/hook")
    expect(page.locator("#notify-last")).to_contain_text("not delivered (failed)")
    expect(page.locator("#notify-last")).to_contain_text("after 3 tries")
    expect(page.locator("#set-hooks")).to_contain_text("Before: echo dumping")
    assert not errors, errors
    page.close()
