"""The citizen's account page in a real browser (issue 16): every section filled (two sessions, a consent, a
signature history entry, access records from a real code flow and userinfo), axe-core finding no WCAG 2.1 A/AA
violation in az, en and ru on a desktop and on a phone-sized viewport (no horizontal scrolling), and the keyboard
alone reaching each action: ending the other session, withdrawing the consent, downloading the data.

Chromium (Debian) headless against a real `acar serve` (tests/browser/conftest.py); the relying party's redirect is
caught by request interception and its token and userinfo requests go over real HTTP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import BrowserContext, Page

from api.deps import Services
from api.i18n import CATALOGS
from signing.sql.models import SigningDocument, SigningRequest
from storage.base import utcnow
from tests.browser.conftest import axe_violations
from tests.browser.test_passkeys_browser import Rp, add_person, arrival, authorize_url, catch_redirects
from tests.functional.helpers import Server, acar_json
from tests.oidc_tools import pkce_pair

pytestmark = pytest.mark.one_pass("sqlite")  # pages in Chromium: tests/conftest.py pytest_collection_modifyitems

FIN = "7BRWSR1"
PURPOSE = "Vergi bəyannamələrinin qəbulu"
PHONE: dict[str, Any] = {"width": 375, "height": 740}
DESKTOP: dict[str, Any] = {"width": 1280, "height": 900}


def _client(site: Server, host: str, name: str, *purpose: str) -> Rp:
    redirect = f"https://{host}/cb"
    out = acar_json(site.env, "client", "add", "--name", name, "--redirect-uri", redirect,  # type: ignore[attr-defined]
                    "--scope", "openid", "--scope", "profile", *(("--purpose", purpose[0]) if purpose else ()))
    return Rp(out["client_id"], out["client_secret"], redirect)


async def _sign_in(page: Page, context: BrowserContext, site: Server, rp: Rp) -> dict[str, Any]:
    """Sign in through the development login, consent, and redeem the code; the client then asks userinfo."""
    caught: list[str] = []
    await catch_redirects(context, rp, caught)
    verifier, challenge = pkce_pair()
    await page.goto(authorize_url(site, rp, challenge))
    await page.fill("#fin", FIN)
    await page.click("#dev-login-submit", no_wait_after=True)
    for _ in range(200):  # the consent page, or (consent given before, in the other browser) the client at once
        if caught:
            break
        if page.url.endswith("/consent"):
            await page.click("#consent-allow", no_wait_after=True)
            break
        await asyncio.sleep(0.05)
    callback = await arrival(caught, rp, 0)
    query = parse_qs(urlsplit(callback).query)
    async with httpx.AsyncClient(base_url=site.base) as http:
        r = await http.post("/token", data={"grant_type": "authorization_code", "code": query["code"][0],
                                            "redirect_uri": rp.redirect_uri, "code_verifier": verifier},
                            auth=(rp.client_id, rp.secret))
        assert r.status_code == 200, r.text
        tokens: dict[str, Any] = r.json()
        assert (await http.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})) \
            .status_code == 200
    return tokens


async def _signature(services: Services, client_id: str) -> None:
    """A finished signature of the person whose document the retention has since deleted (the real signing flow:
    tests/functional/test_account_signatures.py)."""
    now = utcnow()
    async with services.sessions() as session, session.begin():
        session.add(SigningRequest(id="b" * 32, client_id=client_id, mode="sign", signer_fin=FIN, level="B-T",
                                   state="completed", reason="Bəyannamə 2026", created_at=now, updated_at=now,
                                   expires_at=now + dt.timedelta(hours=1), finished_at=now, purged_at=now))
        await session.flush()
        session.add(SigningDocument(request_id="b" * 32, n=1, filename="beyanname-2026-dekabr.pdf", pages=1,
                                    size=100, sha256="a" * 64, findings=[], content=None, state="signed",
                                    signed=None, signed_sha256="c" * 64, signed_at=now))


async def _tab_to(page: Page, element_id: str, limit: int = 80) -> None:
    """Press Tab until the element with `element_id` has the focus (the keyboard user's way to it)."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate("() => document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} is not reachable with Tab")


async def _fits(page: Page) -> bool:
    return bool(await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"))


async def test_account_page_keyboard_only_accessible_in_three_languages(
        site: Server, services: Services, context: BrowserContext, page: Page, tmp_path: Path) -> None:
    add_person(site, FIN)
    rp = _client(site, "tax.agency-a.example", "Vergi portalı", PURPOSE)
    await _sign_in(page, context, site, rp)
    await _signature(services, rp.client_id)
    # a second browser (the phone) signed in as the same person
    phone_context = await page.context.browser.new_context(locale="az-AZ")  # type: ignore[union-attr]
    try:
        phone = await phone_context.new_page()
        await _sign_in(phone, phone_context, site, rp)

        for lang in ("az", "en", "ru"):
            words = CATALOGS[lang]
            await page.goto(f"{site.base}/language/{lang}?next=/account")
            assert await page.get_attribute("html", "lang") == lang
            assert await page.inner_text("h1") == words["account.title"]
            for size in (DESKTOP, PHONE):
                await page.set_viewport_size(size)
                assert await axe_violations(page) == [], (lang, size)
                assert await _fits(page), (lang, size)
            text = await page.inner_text("main")
            assert PURPOSE in text and "beyanname-2026-dekabr.pdf" in text and "Vergi portalı" in text
            assert words["account.signatures.purged"] in text and words["account.sessions.current"] in text
            assert await page.locator("#access-table tbody tr").count() == 4  # two tokens, two userinfo answers
            assert await page.locator("#session-table tbody tr").count() == 2
            # on the phone each row is a card naming its columns (the header row is hidden but still read)
            label = await page.evaluate(
                "() => getComputedStyle(document.querySelector('#access-table td'), '::before').content")
            assert words["account.access.when"] in label

        # the keyboard alone: the contents link to the access record, then each action
        await page.set_viewport_size(PHONE)
        await page.goto(f"{site.base}/language/en?next=/account")
        await _tab_to(page, "contents-access")
        await page.keyboard.press("Enter")
        assert page.url.endswith("#access")
        await _tab_to(page, "export-link")
        async with page.expect_download() as download_info:
            await page.keyboard.press("Enter")
        download = await download_info.value
        saved = tmp_path / "export.json"
        await download.save_as(saved)
        exported = json.loads(saved.read_text())
        assert exported["person"]["fin"] == FIN and len(exported["access_record"]) == 4
        assert [s["filename"] for s in exported["signatures"]] == ["beyanname-2026-dekabr.pdf"]

        await page.goto(f"{site.base}/account")
        await _tab_to(page, "session-2-end-submit")
        async with page.expect_navigation():
            await page.keyboard.press("Enter")
        assert await page.inner_text("#account-notice") == CATALOGS["en"]["account.done.session_ended"]
        assert await page.get_attribute("#account-notice", "role") == "status"
        assert await page.locator("#session-table tbody tr").count() == 1
        await phone.goto(f"{site.base}/account")
        assert await phone.inner_text("h1") == CATALOGS["az"]["account.signin.title"]  # the phone is signed out

        await _tab_to(page, "consent-1-withdraw-submit")
        async with page.expect_navigation():
            await page.keyboard.press("Enter")
        assert await page.inner_text("#account-notice") == CATALOGS["en"]["account.done.withdrawn"]
        assert await page.locator("#consents-none").count() == 1
        assert await axe_violations(page) == []
    finally:
        await phone_context.close()


DIRECTOR_FIN, REPRESENTATIVE_FIN, DIRECTED_VOEN = "3DIR456", "7REP123", "1234567891"


async def test_the_director_section_keyboard_only_accessible(site: Server, page: Page) -> None:
    """A company's director (acar entity add --director) signed in at level substantial: the "Companies you
    direct" section in English, axe-core 0 violations with and without the form's errors on a desktop and a phone,
    and the keyboard alone giving a mandate and taking it back."""
    add_person(site, DIRECTOR_FIN)
    add_person(site, REPRESENTATIVE_FIN)
    acar_json(site.env, "entity", "add", "--voen", DIRECTED_VOEN, "--name", "Bakı Çay MMC",  # type: ignore[attr-defined]
              "--legal-form", "MMC", "--director", DIRECTOR_FIN)
    rp = _client(site, "tax.agency-b.example", "Vergi portalı")
    caught: list[str] = []
    await catch_redirects(page.context, rp, caught)
    _, challenge = pkce_pair()
    await page.goto(authorize_url(site, rp, challenge))
    await page.fill("#fin", DIRECTOR_FIN)
    await page.select_option("#level", "substantial")
    await page.click("#dev-login-submit", no_wait_after=True)
    for _ in range(200):
        if caught:
            break
        if page.url.endswith("/consent"):
            await page.click("#consent-allow", no_wait_after=True)
            break
        await asyncio.sleep(0.05)
    await arrival(caught, rp, 0)
    for _ in range(50):  # the redirect to the (unreachable) client ends in Chromium's error page: let it land
        if not page.url.startswith(site.base):
            break
        await asyncio.sleep(0.05)
    await page.wait_for_load_state()

    words = CATALOGS["en"]
    await page.goto(f"{site.base}/language/en?next=/account")
    assert await page.inner_text("#companies-heading") == words["account.director.heading"]
    assert await page.locator("#company-1-none").count() == 1
    await page.click("#company-1-grant-submit")  # nothing typed: the errors next to the fields
    assert await page.locator("#company-1-errors").count() == 1
    assert await page.inner_text("#company-1-errors-heading") == words["account.director.error.summary"]
    for size in (DESKTOP, PHONE):
        await page.set_viewport_size(size)
        assert await axe_violations(page) == [], size
        assert await _fits(page), size

    await page.goto(f"{site.base}/account")
    await _tab_to(page, "contents-companies")
    await page.keyboard.press("Enter")
    assert page.url.endswith("#companies")
    await _tab_to(page, "company-1-fin")
    await page.keyboard.type(REPRESENTATIVE_FIN)
    await _tab_to(page, "company-1-power-sign_declarations")
    await page.keyboard.press("Space")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert await page.inner_text("#account-notice") == words["account.director.done.granted"]
    assert await page.locator("#company-1-mandates tbody tr").count() == 1
    assert await axe_violations(page) == []
    await _tab_to(page, "company-1-mandate-1-revoke-submit")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert await page.inner_text("#account-notice") == words["account.director.done.revoked"]
    assert words["officer.mandate.state.revoked"] in await page.inner_text("#company-1-mandate-1")
