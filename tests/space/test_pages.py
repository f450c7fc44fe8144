"""The Space's own web pages in headless Chromium against a real Space: sign in, approve and deny
a device, usage per repository, devices (revoke), trash (restore, empty). Screenshots at desktop
and phone width go to ``test-output/screenshots/space-*.png``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from tests.gateway.conftest import CHROMIUM, chromium_args
from tests.support.space_server import PASSWORD, SpaceServer
from timevault.core.storage.space import SpaceStorage, parse_space_location

pytestmark = [pytest.mark.browser, pytest.mark.space, pytest.mark.timeout(180)]

DESKTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=chromium_args())
        yield browser
        browser.close()


@pytest.fixture
def shots(test_output_dir: Path) -> Path:
    path = test_output_dir / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_page(browser: Browser, viewport: ViewportSize, errors: list[str]) -> Page:
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # CSP violations and failed scripts show up as console errors; expected 4xx answers do not count.
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and "Failed to load resource" not in msg.text else None)
    return page


def put_objects(space: SpaceServer, token: str) -> None:
    async def run() -> None:
        storage = SpaceStorage(parse_space_location(space.location("photos")), token)
        try:
            await storage.put("config", b"c" * 300)
            await storage.put("data/aa/pack1", os.urandom(2 * 1024 * 1024))
            await storage.put("data/bb/pack2", os.urandom(1024 * 1024))
            await storage.delete("data/bb/pack2")
        finally:
            await storage.close()

    # Playwright's sync API runs an event loop in this thread: the client gets its own thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def sign_in(page: Page, user: str, password: str) -> None:
    page.get_by_label("Name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_account_pages(browser: Browser, space: SpaceServer, shots: Path) -> None:
    space.add_user("pia", quota=100 * 1024 * 1024)
    token = space.sign_in_device("pia", device_name="old-laptop")
    put_objects(space, token)
    errors: list[str] = []
    page = new_page(browser, DESKTOP, errors)
    page.goto(space.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shots_prefix = str(shots / "space")
    page.screenshot(path=f"{shots_prefix}-01-sign-in.png", full_page=True)
    sign_in(page, "pia", "not the password")
    expect(page.locator("#signin-error")).to_have_text("wrong name or password")
    sign_in(page, "pia", PASSWORD)

    expect(page.get_by_role("heading", name="Usage")).to_be_visible()
    expect(page.locator("#who")).to_have_text("Signed in as pia")
    expect(page.locator("#usage-summary")).to_contain_text("of 100.0 MiB used")
    repos = page.locator("#repos tbody tr")
    expect(repos).to_have_count(1)
    expect(repos.first).to_contain_text("photos")
    expect(repos.first).to_contain_text("1.0 MiB (1)")  # the deleted pack, in the trash
    expect(page.locator("#devices tbody tr")).to_have_count(1)
    expect(page.locator("#devices")).to_contain_text("TimeVault on old-laptop")
    expect(page.locator("#trash tbody tr")).to_have_count(1)
    expect(page.locator("#trash")).to_contain_text("photos/data/bb/pack2")
    page.screenshot(path=f"{shots_prefix}-02-account.png", full_page=True)

    page.get_by_role("button", name="Restore photos/data/bb/pack2").click()
    expect(page.locator("#trash-message")).to_have_text("Restored 1 object.")
    expect(page.locator("#trash tbody tr")).to_have_count(0)
    expect(page.locator("#trash-summary")).to_have_text("The trash is empty.")
    status, account = space.request("GET", "/space/v1/account", token=token)
    assert status == 200 and account["repos"][0]["objects"] == 3

    page.get_by_role("button", name="Revoke TimeVault on old-laptop").click()
    expect(page.locator("#devices-empty")).to_be_visible()
    assert space.request("GET", "/space/v1/account", token=token)[0] == 401

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.close()
    assert errors == []


def test_device_page_approve_and_deny(browser: Browser, space: SpaceServer, shots: Path) -> None:
    space.add_user("quinn")
    errors: list[str] = []
    code = space.device_code("quinn-desktop")
    page = new_page(browser, PHONE, errors)  # the person scanned the QR code with a phone
    page.goto(code["verification_uri_complete"])
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.screenshot(path=str(shots / "space-03-device-sign-in-phone.png"), full_page=True)
    sign_in(page, "quinn", PASSWORD)
    expect(page.get_by_role("heading", name="Allow this device?")).to_be_visible()
    expect(page.locator("#client")).to_have_text("TimeVault on quinn-desktop")
    expect(page.locator("#decision-code")).to_have_text(code["user_code"])
    page.screenshot(path=str(shots / "space-04-device-approve-phone.png"), full_page=True)
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("heading", name="Device approved")).to_be_visible()
    status, body = space.poll(code["device_code"])
    assert status == 200 and body["account"] == "quinn"

    # A second device, its code typed by hand (lower case, no dash), denied.
    second = space.device_code("stranger")
    page.goto(space.url + "/device")
    expect(page.get_by_role("heading", name="Connect a device")).to_be_visible()
    page.get_by_label("Code shown by TimeVault").fill("bcdf-ghjk")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#code-error")).to_contain_text("no device is waiting for this code")
    page.get_by_label("Code shown by TimeVault").fill(second["user_code"].lower().replace("-", ""))
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#client")).to_have_text("TimeVault on stranger")
    page.get_by_role("button", name="Deny").click()
    expect(page.get_by_role("heading", name="Device denied")).to_be_visible()
    page.screenshot(path=str(shots / "space-05-device-denied-phone.png"), full_page=True)
    status, body = space.poll(second["device_code"])
    assert (status, body["error"]) == (400, "access_denied")
    page.close()
    assert errors == []
