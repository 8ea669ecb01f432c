"""The signer's approval page in a real browser (Chromium, CDP virtual authenticator): enrolment with an activation
code, the page sending the signer through the passkey login and back, the previews, approval with the keyboard
only, and axe-core on the approval and state pages in az, en and ru.

The server is the application in this test process (its ASGI app), reached through Playwright request interception
at the issuer's origin (http://localhost:8000, the WebAuthn origin of the test settings), with the signing requests
in tests.approval_tools.MemoryApprovalStore. The agency flow over a real `acar serve` and the signing tables is
tests/browser/test_signing_approval_browser.py.

Chromium's virtual authenticator reaches level substantial (its attestation chains to no configured root), so the
approval level is set to substantial here; level high is tested in tests/unit/signing/test_approval_page.py.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import BrowserContext, Page, Route

from api.deps import Services, build_approval
from signing.core.preview import PreviewPolicy, PreviewRenderer
from tests.approval_tools import MemoryApprovalStore, text_pdf
from tests.browser.conftest import axe_violations, virtual_authenticator
from tests.oidc_tools import ISSUER, register_client, register_person
from tests.passkey_tools import issue_code
from tests.pki_tools import initialize_pki

pytestmark = pytest.mark.one_pass("sqlite")  # pages in Chromium: tests/conftest.py pytest_collection_modifyitems

FIN = "7BRWSR1"
NO_CONDITIONAL_UI = ("window.PublicKeyCredential && (PublicKeyCredential.isConditionalMediationAvailable = "
                     "async () => false);")
HOP_BY_HOP = {"content-length", "transfer-encoding", "connection"}


async def serve_in_process(context: BrowserContext, app: FastAPI) -> httpx.AsyncClient:
    """Answer every request of the browser to ISSUER from `app` (cookies travel in the headers both ways).

    Chromium does not route the request a fulfilled redirect leads to, so a redirect is handed to the browser as a
    page that moves on at once (meta refresh) with the redirect's own headers (its cookies): the browser then asks
    for the Location itself, as after a redirect."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)

    async def handle(route: Route) -> None:
        request = route.request
        headers = {k: v for k, v in (await request.all_headers()).items() if not k.startswith(":")}
        answer = await http.request(request.method, request.url, headers=headers, content=request.post_data_buffer,
                                    follow_redirects=False)
        out: dict[str, str] = {}
        for name, value in answer.headers.multi_items():
            if name.lower() not in HOP_BY_HOP:
                out[name] = f"{out[name]}\n{value}" if name in out else value
        body, status = answer.content, answer.status_code
        if answer.is_redirect:
            target = html.escape(urljoin(request.url, answer.headers["location"]))
            body = f'<!doctype html><meta http-equiv="refresh" content="0;url={target}">'.encode()
            status = 200
            out = {k: v for k, v in out.items() if k.lower() != "location"} | {"content-type": "text/html"}
        await route.fulfill(status=status, headers=out, body=body)

    await context.route(f"{ISSUER}/**", handle)
    return http


@pytest.fixture
async def world(initialized: Services, app: FastAPI, context: BrowserContext) -> AsyncIterator[MemoryApprovalStore]:
    store = MemoryApprovalStore()
    wired = initialized.approval
    await initialize_pki(initialized)  # an approved request is signed with the signer's own key, made by the CA
    initialized.approval = dataclasses.replace(
        build_approval(initialized.settings, initialized.pki, initialized.key_store, initialized.sessions),
        stores=lambda tx: store,
        previews=PreviewRenderer(PreviewPolicy(max_side=500)), level="substantial")
    http = await serve_in_process(context, app)
    try:
        yield store
    finally:
        initialized.approval = wired
        await http.aclose()


async def enroll(services: Services, page: Page) -> None:
    person_id = await register_person(services, FIN)
    await page.goto(ISSUER + "/enroll")
    await page.fill("#activation-code", await issue_code(services, person_id))
    await page.click("#enroll-submit")
    await page.wait_for_selector("#enroll-accepted")
    await page.click("#passkey-button")
    await page.wait_for_url(re.compile(r"/enroll/done$"))


async def tab_to(page: Page, element_id: str, limit: int = 80) -> None:
    """Press Tab until `element_id` has the focus (keyboard only)."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate("() => document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} cannot be reached with the Tab key")


async def test_sign_in_preview_approve_with_the_keyboard_and_axe(initialized: Services, world: MemoryApprovalStore,
                                                                 context: BrowserContext, page: Page) -> None:
    rp = await register_client(initialized, name="Vergilər Nazirliyi")
    await virtual_authenticator(page)
    await context.add_init_script(NO_CONDITIONAL_UI)
    await enroll(initialized, page)
    request_id = secrets.token_urlsafe(18)
    world.add(request_id, client_id=rp.client_id, signer_fin=FIN,
              documents=[("bəyannamə.pdf", text_pdf("Page one", "Page two"), 2), ("akt.pdf", text_pdf("Akt"), 1)])
    report: dict[str, list[dict[str, Any]]] = {}

    # not signed in: the ordinary login page, on behalf of the agency, and back
    await page.goto(f"{ISSUER}/sign/{request_id}")
    await page.wait_for_url(re.compile(r"/interaction/[A-Za-z0-9_-]+$"))
    assert "Vergilər Nazirliyi" in await page.inner_text("#login-agency")
    await page.click("#passkey-button")
    await page.wait_for_url(f"{ISSUER}/sign/{request_id}")
    await page.wait_for_selector("#passkey-button")

    # what will be signed: every page rendered
    assert "Vergilər Nazirliyi" in await page.inner_text("#sign-agency")
    assert await page.inner_text("#document-1-sha256") == world.requests[request_id].documents[0].sha256
    images = page.locator("ol.previews img")
    assert await images.count() == 3
    for index in range(3):
        image = images.nth(index)
        await image.scroll_into_view_if_needed()
        await page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=await image.element_handle())
    assert await images.nth(1).get_attribute("alt") == "bəyannamə.pdf, səhifə 2 / 2"

    for lang in ("az", "en", "ru"):
        await context.add_cookies([{"name": "acar_lang", "value": lang, "url": ISSUER}])
        await page.goto(f"{ISSUER}/sign/{request_id}")
        await page.wait_for_selector("#passkey-button")
        assert await page.get_attribute("html", "lang") == lang
        report.update({f"{lang} approval": v for v in [await axe_violations(page)] if v})

    # Approve with the keyboard alone
    await context.add_cookies([{"name": "acar_lang", "value": "en", "url": ISSUER}])
    await page.goto(f"{ISSUER}/sign/{request_id}")
    await page.wait_for_selector("#passkey-button")
    await tab_to(page, "passkey-button")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#sign-state")
    assert "You approved the documents" in await page.inner_text("#sign-state")
    assert world.state(request_id) == "approved"
    assert world.jobs == [(request_id, 1), (request_id, 2)]
    [(event, _, _, detail)] = world.events
    assert event == "signing.request.approved" and detail["level"] == "substantial"

    for lang in ("az", "en", "ru"):
        await context.add_cookies([{"name": "acar_lang", "value": lang, "url": ISSUER}])
        await page.goto(f"{ISSUER}/sign/{request_id}")
        await page.wait_for_selector("#sign-state")
        report.update({f"{lang} approved": v for v in [await axe_violations(page)] if v})
    assert report == {}, json.dumps(report, indent=1, ensure_ascii=False)[:4000]


async def test_reject_with_the_keyboard(initialized: Services, world: MemoryApprovalStore, context: BrowserContext,
                                        page: Page) -> None:
    rp = await register_client(initialized, name="Vergilər Nazirliyi")
    await virtual_authenticator(page)
    await context.add_init_script(NO_CONDITIONAL_UI)
    await enroll(initialized, page)
    request_id = secrets.token_urlsafe(18)
    world.add(request_id, client_id=rp.client_id, signer_fin=FIN, documents=[("akt.pdf", text_pdf("Akt"), 1)])
    await page.goto(f"{ISSUER}/sign/{request_id}")
    await page.wait_for_url(re.compile(r"/interaction/"))
    await page.click("#passkey-button")
    await page.wait_for_selector("#reject-button")
    await tab_to(page, "reject-button")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#sign-state")
    assert world.state(request_id) == "rejected" and world.jobs == []
    report: dict[str, list[dict[str, Any]]] = {}
    other = secrets.token_urlsafe(18)
    world.add(other, client_id=rp.client_id, signer_fin="8OTHER1", documents=[("akt.pdf", text_pdf("Akt"), 1)])
    for lang in ("az", "en", "ru"):
        await context.add_cookies([{"name": "acar_lang", "value": lang, "url": ISSUER}])
        for name, address in (("rejected", request_id), ("unknown", "no-such-request"), ("wrong signer", other)):
            await page.goto(f"{ISSUER}/sign/{address}")
            await page.wait_for_selector("#sign-state")
            report.update({f"{lang} {name}": v for v in [await axe_violations(page)] if v})
    assert await page.is_visible("#sign-logout")
    assert report == {}, json.dumps(report, indent=1, ensure_ascii=False)[:4000]


async def test_on_behalf_of_an_entity_with_the_keyboard_and_axe(initialized: Services, world: MemoryApprovalStore,
                                                                context: BrowserContext, page: Page) -> None:
    """Issue 16: a request on behalf of a legal entity says so ("on behalf of <entity> (VÖEN)") and is approved with
    the keyboard, under the signer's mandate (the registry's real tables); for an entity the signer holds no mandate
    of, the page names the reason; both pass axe-core in az, en and ru."""
    from idp.sql.registry import EntityService, MandateService
    from signing.core.interfaces import EntityForm, SigningEntity

    rp = await register_client(initialized, name="Vergilər Nazirliyi")
    await virtual_authenticator(page)
    await context.add_init_script(NO_CONDITIONAL_UI)
    await enroll(initialized, page)
    async with initialized.sessions() as session, session.begin():
        for voen, name in (("1400057421", "Xəzər Logistika MMC"), ("1500057421", "Başqa MMC")):
            await EntityService(session).add(voen=voen, name=name, legal_form="MMC", actor="test")
        mandate = await MandateService(session).grant(fin=FIN, voen="1400057421", powers=["sign_declarations"],
                                                      granted_by="officer", granted_via="officer", actor="test")
    world.entities["1400057421"] = SigningEntity("1400057421", EntityForm.PERSON, "Xəzər Logistika MMC", None)
    request_id, refused = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    for rid, voen in ((request_id, "1400057421"), (refused, "1500057421")):
        world.add(rid, client_id=rp.client_id, signer_fin=FIN, documents=[("edv.pdf", text_pdf("EDV"), 1)],
                  entity_voen=voen)
    await page.goto(f"{ISSUER}/sign/{request_id}")
    await page.wait_for_url(re.compile(r"/interaction/"))
    await page.click("#passkey-button")
    await page.wait_for_url(f"{ISSUER}/sign/{request_id}")
    await page.wait_for_selector("#passkey-button")
    report: dict[str, list[dict[str, Any]]] = {}
    expected = {"az": "Xəzər Logistika MMC adından (VÖEN 1400057421)",
                "en": "on behalf of Xəzər Logistika MMC (VÖEN 1400057421)",
                "ru": "от имени Xəzər Logistika MMC (VÖEN 1400057421)"}
    for lang in ("az", "en", "ru"):
        await context.add_cookies([{"name": "acar_lang", "value": lang, "url": ISSUER}])
        await page.goto(f"{ISSUER}/sign/{request_id}")
        await page.wait_for_selector("#passkey-button")
        assert await page.inner_text("#sign-entity") == expected[lang]
        report.update({f"{lang} entity approval": v for v in [await axe_violations(page)] if v})
        await page.goto(f"{ISSUER}/sign/{refused}")
        await page.wait_for_selector("#sign-state")
        report.update({f"{lang} no mandate": v for v in [await axe_violations(page)] if v})
    assert "у вас нет доверенности" in (await page.inner_text("#sign-state")).replace("\u00a0", " ")

    await context.add_cookies([{"name": "acar_lang", "value": "en", "url": ISSUER}])
    await page.goto(f"{ISSUER}/sign/{request_id}")
    await page.wait_for_selector("#passkey-button")
    await tab_to(page, "passkey-button")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#sign-state")
    assert world.state(request_id) == "approved" and world.state(refused) == "pending"
    assert world.representations[request_id] == ("person", mandate.id)
    [(event, _, _, detail)] = world.events
    assert event == "signing.request.approved" and detail["representation"]["mandate_id"] == mandate.id
    assert report == {}, json.dumps(report, indent=1, ensure_ascii=False)[:4000]
