"""The /verify page in a real browser (Chromium, the session's one browser process): an Açar-signed PDF uploaded with
the keyboard only, the report shown with its status, axe-core finding no WCAG 2.1 A/AA violation on the form and on
the report in az, en and ru, on a desktop and on a phone-sized viewport (no horizontal scrolling of the page).

The server is a real `acar serve` (Chromium's request interception does not carry an uploaded file's bytes) on the
test database, whose PKI `world` made: its issuer is the one in the certificates, so its OCSP answers in process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, FileChooser, Page

from api.i18n import CATALOGS, translator
from api.settings import Settings
from signing.core.levels import PadesLevel
from tests.browser.conftest import axe_violations
from tests.functional.helpers import Server
from tests.local_http import free_port
from tests.pades_world import World
from tests.signing_tools import minimal_pdf

pytestmark = pytest.mark.one_pass("sqlite")  # pages in Chromium: tests/conftest.py pytest_collection_modifyitems

PHONE: dict[str, Any] = {"viewport": {"width": 375, "height": 740}, "device_scale_factor": 2}
"""A phone-sized viewport; not Chromium's mobile emulation, whose touch mode opens no file chooser from the keyboard
(a phone's user taps), while this test walks the page with the keyboard alone."""
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 900}}
LOCALES = {"az": "az-AZ", "en": "en-GB", "ru": "ru-RU"}


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, port: int) -> Settings:
    """The issuer of the server below, so the certificates `world` issues point at it."""
    settings.issuer = f"http://localhost:{port}"
    return settings


@pytest.fixture
def server(world: World, cli_env: dict[str, str], port: int, tmp_path: Path) -> Iterator[Server]:
    env = {**cli_env, "ACAR_ISSUER": f"http://localhost:{port}"}
    server = Server(env, port=port, log_path=tmp_path / "server.log", init=True)  # init keeps the PKI `world` made
    server.wait_ready()
    try:
        yield server
    finally:
        server.stop()


async def _tab_to(page: Page, element_id: str) -> None:
    """Press Tab until the element with `element_id` has the focus (the keyboard user's way to it)."""
    for _ in range(25):
        await page.keyboard.press("Tab")
        if await page.evaluate("() => document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} is not reachable with Tab")


async def _fits(page: Page) -> bool:
    return bool(await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"))


@pytest.mark.parametrize("device", ["desktop", "phone"])
async def test_keyboard_only_upload_and_accessible_report_in_three_languages(
        browser: Browser, world: World, server: Server, tmp_path: Path, device: str) -> None:
    signed = tmp_path / "arayis.pdf"
    signed.write_bytes(await world.sign(minimal_pdf(1, "Arayış"), PadesLevel.B_LT))
    for lang, locale in LOCALES.items():
        context = await browser.new_context(locale=locale, **(PHONE if device == "phone" else DESKTOP))
        try:
            page = await context.new_page()
            # listening before the page loads: Playwright turns Chromium's file chooser interception on without
            # waiting for it, so a listener added just before the key press could miss the chooser
            chooser: asyncio.Future[FileChooser] = asyncio.get_running_loop().create_future()
            page.on("filechooser", lambda found, future=chooser: future.done() or future.set_result(found))
            await page.goto(f"http://localhost:{server.port}/verify")
            assert await page.get_attribute("html", "lang") == lang
            assert await page.inner_text("h1") == CATALOGS[lang]["verify.title"]
            assert await axe_violations(page) == [], (lang, device, "form")
            assert await _fits(page), (lang, device)

            await _tab_to(page, "verify-file")
            await page.keyboard.press("Space")
            await (await asyncio.wait_for(chooser, 30)).set_files(str(signed))
            await _tab_to(page, "verify-submit")
            async with page.expect_navigation():
                await page.keyboard.press("Enter")

            summary = page.locator("#verify-summary")
            await summary.wait_for()
            assert await summary.get_attribute("role") == "status"
            assert await summary.inner_text() == translator(lang).ngettext("report.summary.passed", 1)
            assert CATALOGS[lang]["report.indication.TOTAL-PASSED"] in await page.inner_text("#signature-1-status")
            assert await page.locator("#signature-1-chain caption").count() == 1
            assert await axe_violations(page) == [], (lang, device, "report")
            assert await _fits(page), (lang, device)
        finally:
            await context.close()
