"""The registration officer's screens in a real browser (Chromium, CDP virtual authenticator): an officer enrolls a
passkey with an activation code, signs in with it (level substantial), then, with the keyboard only, registers a
person and grants them a mandate, in az, en and ru, the last on a phone's viewport; axe-core finds nothing on any
officer page (forms, errors, the person's page, the activation code, the 403 page once the role is revoked).

The server is the application in this test process, reached through Playwright request interception at the
issuer's origin, as tests/browser/test_approval_browser.py does.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from playwright.async_api import BrowserContext, Page
from sqlalchemy import select

from api.deps import Services
from idp.sql.models import Mandate, Person
from idp.sql.registry import EntityService
from idp.sql.roles import REGISTRATION_OFFICER, RoleService
from tests.browser.conftest import axe_violations, virtual_authenticator
from tests.browser.test_approval_browser import FIN as OFFICER_FIN
from tests.browser.test_approval_browser import NO_CONDITIONAL_UI, enroll, serve_in_process, tab_to
from tests.oidc_tools import ISSUER, authorization_params, pkce_pair, register_client

pytestmark = pytest.mark.one_pass("sqlite")  # pages in Chromium: tests/conftest.py pytest_collection_modifyitems

VOEN = "1234567891"
PEOPLE = {"az": ("1AZAZ01", "Leyla", "Həsənova"), "en": ("2ENEN02", "Elvin", "Quliyev"),
          "ru": ("3RURU03", "Nərmin", "Səfərova")}
PHONE = {"width": 360, "height": 740}


@pytest.fixture
async def served(initialized: Services, app: FastAPI, context: BrowserContext) -> AsyncIterator[Services]:
    http = await serve_in_process(context, app)
    async with initialized.sessions() as session, session.begin():
        await EntityService(session).add(voen=VOEN, name="Bakı Çay MMC", legal_form="MMC", actor="test")
    try:
        yield initialized
    finally:
        await http.aclose()


async def sign_in_with_passkey(services: Services, page: Page) -> None:
    """Enroll the officer's passkey, then sign in with it at a service (the session is what /officer reads)."""
    await enroll(services, page)
    async with services.sessions() as session, session.begin():
        await RoleService(session).grant(fin=OFFICER_FIN, role=REGISTRATION_OFFICER, actor="test")
    rp = await register_client(services, name="Qeydiyyat mərkəzi")
    _, challenge = pkce_pair()
    await page.goto(f"{ISSUER}/authorize?{urlencode(authorization_params(rp, challenge))}")
    await page.click("#passkey-button")
    await page.wait_for_url(re.compile(r"/consent$"))


async def type_into(page: Page, element_id: str, text: str) -> None:
    await tab_to(page, element_id)
    await page.keyboard.type(text)


async def no_sideways_scroll(page: Page) -> bool:
    return bool(await page.evaluate(
        "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


async def test_register_a_person_and_grant_a_mandate_with_the_keyboard(served: Services, context: BrowserContext,
                                                                      page: Page) -> None:
    await virtual_authenticator(page)
    await context.add_init_script(NO_CONDITIONAL_UI)
    await sign_in_with_passkey(served, page)
    report: dict[str, list[dict[str, Any]]] = {}
    narrow: list[str] = []
    checked: list[str] = []

    async def check(label: str, lang: str) -> None:
        assert await page.get_attribute("html", "lang") == lang, label
        checked.append(f"{lang} {label}")
        found = await axe_violations(page)
        if found:
            report[f"{lang} {label}"] = found
        if not await no_sideways_scroll(page):
            narrow.append(f"{lang} {label}")

    for lang, (fin, given, family) in PEOPLE.items():
        if lang == "ru":
            await page.set_viewport_size(PHONE)
        await context.add_cookies([{"name": "acar_lang", "value": lang, "url": ISSUER}])
        await page.goto(f"{ISSUER}/officer")
        await check("find", lang)

        # to the registration form through the navigation, then submit it empty: the error summary
        await tab_to(page, "nav-register")
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{ISSUER}/officer/persons/new")
        await check("register", lang)
        await tab_to(page, "register-submit")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#error-summary")
        await check("register errors", lang)
        assert await page.get_attribute("#given_name", "aria-invalid") == "true"
        # the summary's link leads to its field
        await page.focus("#error-summary-given_name")
        await page.keyboard.press("Enter")
        assert await page.evaluate("() => document.activeElement.id") == "given_name"

        await page.goto(f"{ISSUER}/officer/persons/new")
        await type_into(page, "fin", fin)
        await type_into(page, "given_name", given)
        await type_into(page, "family_name", family)
        await type_into(page, "birthdate", "1991-04-12")
        await tab_to(page, "register-submit")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#officer-notice")
        assert f"{given} {family}" in await page.inner_text("#person-name")
        await check("person registered", lang)

        # to the mandate form, and grant one
        await tab_to(page, "person-mandate-link")
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{ISSUER}/officer/mandates/new")
        await check("mandate", lang)
        await type_into(page, "fin", fin)
        await type_into(page, "voen", VOEN)
        await tab_to(page, "powers")
        await page.keyboard.press("Space")
        await tab_to(page, "mandate-submit")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#mandate-1")
        assert "Bakı Çay MMC" in await page.inner_text("#mandate-1-entity")
        await check("person with mandate", lang)

        await page.goto(f"{ISSUER}/officer/entities/new")
        await check("entity", lang)
        await page.goto(f"{ISSUER}/officer")
        await type_into(page, "fin", fin)
        await tab_to(page, "find-submit")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#code-submit")
        await tab_to(page, "code-submit")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#activation-code")
        await check("activation code", lang)

    # the role taken away: the next request gets the 403 page
    async with served.sessions() as session, session.begin():
        assert await RoleService(session).revoke(fin=OFFICER_FIN, role=REGISTRATION_OFFICER, actor="test")
    for lang in PEOPLE:
        await context.add_cookies([{"name": "acar_lang", "value": lang, "url": ISSUER}])
        await page.goto(f"{ISSUER}/officer")
        await page.wait_for_selector("#officer-denied")
        await check("denied", lang)

    async with served.sessions() as session:
        mandates = (await session.execute(select(Mandate, Person).join(Person, Person.id == Mandate.person_id)))
        granted = sorted((person.fin, mandate.powers, mandate.granted_via) for mandate, person in mandates.all())
    assert granted == sorted((fin, ["sign_declarations"], "officer") for fin, _, _ in PEOPLE.values())
    assert len(checked) == 3 * 9 and narrow == []
    assert report == {}, json.dumps(report, indent=1, ensure_ascii=False)[:4000]
