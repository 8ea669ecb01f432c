"""The consent page of a staff client in a real browser (issue 16): it names the staff roles the person holds and
no other, in az/en/ru, with axe-core finding no violation, and is answered with the keyboard alone."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page

from tests.browser.conftest import axe_violations
from tests.browser.test_passkeys_browser import Rp, arrival, authorize_url, catch_redirects
from tests.functional.helpers import Server, acar_json
from tests.oidc_tools import pkce_pair

pytestmark = pytest.mark.one_pass("sqlite")  # pages in Chromium: tests/conftest.py pytest_collection_modifyitems

FIN, AGENCY = "8STAFF1", "1400057421"
ROLE_WORDS = {"az": "Qurum administratoru", "en": "Agency administrator", "ru": "Администратор ведомства"}
NOT_HELD = {"az": "Sistem administratoru", "en": "System administrator", "ru": "Системный администратор"}


def _staff_client(site: Server) -> Rp:
    env = site.env  # type: ignore[attr-defined]
    acar_json(env, "person", "add", "--fin", FIN, "--given-name", "Aysel", "--family-name", "Məmmədova")
    acar_json(env, "role", "grant", FIN, "agency_admin", "--agency", AGENCY)
    redirect = "https://console.agency-a.example/cb"
    out = acar_json(env, "client", "add", "--name", "İdarəetmə konsolu", "--redirect-uri", redirect, "--scope",
                    "openid", "--scope", "acar:role:agency_admin", "--scope", "acar:role:system_admin")
    return Rp(out["client_id"], out["client_secret"], redirect)


async def test_the_staff_consent_page_in_every_language(site: Server, context: BrowserContext, page: Page) -> None:
    rp = _staff_client(site)
    caught: list[str] = []
    await catch_redirects(context, rp, caught)
    scope = "openid acar:role:agency_admin acar:role:system_admin"
    report: dict[str, list[dict[str, Any]]] = {}
    _verifier, challenge = pkce_pair()
    await page.goto(authorize_url(site, rp, challenge, scope=scope))
    await page.fill("#fin", FIN)
    await page.click("#dev-login-submit")
    await page.wait_for_url(re.compile(r"/consent$"))
    for lang in ("az", "en", "ru"):
        await context.add_cookies([{"name": "acar_lang", "value": lang, "url": site.base}])
        await page.goto(authorize_url(site, rp, challenge, scope=scope, prompt="consent"))
        await page.wait_for_url(re.compile(r"/consent$"))
        assert await page.get_attribute("html", "lang") == lang
        roles = await page.inner_text("#consent-roles")
        assert ROLE_WORDS[lang] in roles and NOT_HELD[lang] not in roles, roles
        found = await axe_violations(page)
        if found:
            report[lang] = found
    assert report == {}, json.dumps(report, indent=1, ensure_ascii=False)[:4000]
    for _ in range(30):  # the keyboard alone answers the page
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "consent-allow":
            break
    before = len(caught)
    await page.keyboard.press("Enter")
    assert "code=" in await arrival(caught, rp, before)
