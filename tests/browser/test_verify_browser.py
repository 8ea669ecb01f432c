"""The /verify page in a real browser (Chromium, the session's one browser process): an Açar-signed PDF uploaded with
the keyboard only, the report shown with its status, axe-core finding no WCAG 2.1 A/AA violation on the form and on
the report in az, en and ru, on a desktop and on a phone-sized viewport (no horizontal scrolling of the page).

The application runs in this test process and is reached through Playwright's request interception at the issuer's
origin (tests.browser.test_approval_browser.serve_in_process), so the signed document comes from the same PKI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, Page

from api.i18n import CATALOGS
from signing.core.levels import PadesLevel
from tests.browser.conftest import axe_violations
from tests.browser.test_approval_browser import serve_in_process
from tests.oidc_tools import ISSUER
from tests.pades_world import World
from tests.signing_tools import minimal_pdf

PHONE: dict[str, Any] = {"viewport": {"width": 375, "height": 740}, "is_mobile": True, "has_touch": True,
                         "device_scale_factor": 2}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 900}}
LOCALES = {"az": "az-AZ", "en": "en-GB", "ru": "ru-RU"}


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
        browser: Browser, app: FastAPI, world: World, tmp_path: Path, device: str) -> None:
    signed = tmp_path / "arayis.pdf"
    signed.write_bytes(await world.sign(minimal_pdf(1, "Arayış"), PadesLevel.B_LT))
    for lang, locale in LOCALES.items():
        context = await browser.new_context(locale=locale, **(PHONE if device == "phone" else DESKTOP))
        http = await serve_in_process(context, app)
        try:
            page = await context.new_page()
            await page.goto(f"{ISSUER}/verify")
            assert await page.get_attribute("html", "lang") == lang
            assert await page.inner_text("h1") == CATALOGS[lang]["verify.title"]
            assert await axe_violations(page) == [], (lang, device, "form")
            assert await _fits(page), (lang, device)

            await _tab_to(page, "verify-file")
            async with page.expect_file_chooser() as chooser:
                await page.keyboard.press("Space")
            await (await chooser.value).set_files(str(signed))
            await _tab_to(page, "verify-submit")
            async with page.expect_navigation():
                await page.keyboard.press("Enter")

            summary = page.locator("#verify-summary")
            await summary.wait_for()
            assert await summary.get_attribute("role") == "status"
            assert await summary.inner_text() == CATALOGS[lang]["report.summary.passed"].format(total=1)
            assert CATALOGS[lang]["report.indication.TOTAL-PASSED"] in await page.inner_text("#signature-1-status")
            assert await page.locator("#signature-1-chain caption").count() == 1
            assert await axe_violations(page) == [], (lang, device, "report")
            assert await _fits(page), (lang, device)
        finally:
            await http.aclose()
            await context.close()
