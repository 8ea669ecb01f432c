"""Representation at login in a real browser (Chromium, CDP virtual authenticator): a passkey login, then the
representation page of a client registered for the `represents` scope, answered with the keyboard alone in az, en
and ru on a phone-sized viewport, axe-core on every language, and the choice checked in the ID token.

The server is the application in this test process, reached through Playwright request interception at the
issuer's origin (tests/browser/test_approval_browser.py: serve_in_process); the agency's redirect URI is answered
by a route of the test, which records the authorization response.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt as pyjwt
import pytest
from fastapi import FastAPI
from playwright.async_api import BrowserContext, Page, Route, ViewportSize

from api.deps import Services
from idp.sql.registry import EntityService, MandateService
from tests.browser.conftest import axe_violations, virtual_authenticator
from tests.browser.test_approval_browser import FIN, NO_CONDITIONAL_UI, enroll, serve_in_process, tab_to
from tests.oidc_tools import ISSUER, Registered, pkce_pair, redeem, register_client

pytestmark = pytest.mark.one_pass("sqlite")  # pages in Chromium: tests/conftest.py pytest_collection_modifyitems

PHONE: ViewportSize = {"width": 375, "height": 740}
REDIRECT = "https://tax.agency.example/cb"
ENTITIES = {"1400057421": "Açar Texnologiya MMC", "1400057431": "Xəzər Logistika ASC"}


async def mandates(services: Services) -> dict[str, str]:
    """Two valid mandates of the enrolled person to represent at login; VÖEN -> mandate id."""
    ids = {}
    async with services.sessions() as session, session.begin():
        for voen, name in ENTITIES.items():
            await EntityService(session).add(voen=voen, name=name, legal_form="MMC", actor="test")
            ids[voen] = (await MandateService(session).grant(
                fin=FIN, voen=voen, powers=["represent_at_login", "sign_declarations"], granted_by="officer-1",
                granted_via="officer", actor="test")).id
    return ids


async def no_horizontal_scroll(page: Page) -> bool:
    return bool(await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"))


async def represents_in_id_token(http: Any, rp: Registered, code: str, verifier: str) -> Any:
    r = await redeem(http, rp, code, verifier)
    assert r.status_code == 200, r.text
    token = r.json()["id_token"]
    jwks = (await http.get("/jwks.json")).json()
    key = {k.key_id: k for k in pyjwt.PyJWKSet.from_dict(jwks).keys}[pyjwt.get_unverified_header(token)["kid"]]
    claims = pyjwt.decode(token, key=key.key, algorithms=["ES256"], audience=rp.client_id, issuer=ISSUER)
    return claims.get("represents")


async def test_choose_whom_to_act_for_with_the_keyboard_in_three_languages(
        initialized: Services, app: FastAPI, context: BrowserContext, page: Page) -> None:
    rp = await register_client(initialized, name="Vergilər Nazirliyi", redirect_uris=(REDIRECT,),
                               scopes=("openid", "profile", "represents"))
    http = await serve_in_process(context, app)
    returned: list[str] = []

    async def agency(route: Route) -> None:
        returned.append(route.request.url)
        await route.fulfill(status=200, headers={"content-type": "text/html"},
                            body=b'<!doctype html><html lang="en"><title>Agency</title><h1 id="agency">Agency</h1>')

    await context.route(f"{REDIRECT}**", agency)
    try:
        await page.set_viewport_size(PHONE)
        await virtual_authenticator(page)
        await context.add_init_script(NO_CONDITIONAL_UI)
        await enroll(initialized, page)
        ids = await mandates(initialized)
        report: dict[str, list[dict[str, Any]]] = {}
        # az: myself (the first, checked choice); en and ru: an entity, reached with the arrow keys
        plan = [("az", 0, None), ("en", 1, "1400057421"), ("ru", 2, "1400057431")]
        for lang, arrows, voen in plan:
            await context.add_cookies([{"name": "acar_lang", "value": lang, "url": ISSUER}])
            verifier, challenge = pkce_pair()
            await page.goto(ISSUER + "/authorize?" + urlencode({
                "client_id": rp.client_id, "redirect_uri": REDIRECT, "response_type": "code",
                "scope": "openid profile represents", "state": f"s-{lang}", "nonce": f"n-{lang}",
                "code_challenge": challenge, "code_challenge_method": "S256"}))
            if lang == "az":  # the first sign-in: the passkey login page
                await page.wait_for_url(re.compile(r"/interaction/[A-Za-z0-9_-]+$"))
                await page.click("#passkey-button")
            await page.wait_for_url(re.compile(r"/interaction/[A-Za-z0-9_-]+/represent$"))
            await page.wait_for_selector("#represent-form")
            assert await page.get_attribute("html", "lang") == lang
            for name in ENTITIES.values():
                assert name in await page.inner_text("#represent-choices")
            assert await no_horizontal_scroll(page), lang
            report.update({f"{lang} represent": v for v in [await axe_violations(page)] if v})

            await tab_to(page, "represent-self")
            for _ in range(arrows):
                await page.keyboard.press("ArrowDown")
            expected_id = "represent-self" if voen is None else f"represent-{list(ENTITIES).index(voen) + 1}"
            assert await page.evaluate("() => document.activeElement.id") == expected_id
            assert await page.is_checked(f"#{expected_id}")
            await tab_to(page, "represent-continue")
            await page.keyboard.press("Enter")
            if lang == "az":  # the first authorization of this client: consent
                await page.wait_for_selector("#consent-allow")
                report.update({f"{lang} consent": v for v in [await axe_violations(page)] if v})
                await tab_to(page, "consent-allow")
                await page.keyboard.press("Enter")
            await page.wait_for_selector("#agency")
            query = {k: v[0] for k, v in parse_qs(urlsplit(returned[-1]).query).items()}
            assert query["state"] == f"s-{lang}", query
            represents = await represents_in_id_token(http, rp, query["code"], verifier)
            if voen is None:
                assert represents is None
            else:
                assert represents == {"voen": voen, "name": ENTITIES[voen],
                                      "powers": ["represent_at_login", "sign_declarations"]}
        assert len(ids) == 2
        assert report == {}, json.dumps(report, indent=1, ensure_ascii=False)[:4000]
    finally:
        await http.aclose()
