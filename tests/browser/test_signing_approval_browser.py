"""The sign-mode flow over a real `acar serve`: an agency creates a sign request through /api/v1/signing-requests,

pytestmark = pytest.mark.one_pass("sqlite")  # pages in Chromium: tests/conftest.py pytest_collection_modifyitems
the signer enrols a passkey, opens the approval URL, signs in with the passkey, sees every page's preview, approves
(axe-core on the way), the in-process worker signs with the signer's own key, the agency downloads the signed
PDFs, which pdfsig (poppler) reads as signed by the person (PNOAZ-<FIN>), and receives the completion callback: a
JWT that PyJWT verifies with the JWKS, naming the digests of the PDFs it downloaded.

Chromium's virtual authenticator reaches level substantial, so the server runs with
ACAR_SIGNING_APPROVAL_LEVEL=substantial (level high is tested in process with an attested authenticator).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from playwright.async_api import BrowserContext, Page

from api.deps import Services
from tests.approval_tools import text_pdf
from tests.browser.conftest import axe_violations, serving_site, virtual_authenticator
from tests.browser.test_passkeys_browser import NO_CONDITIONAL_UI, activation_code, add_person, enroll
from tests.functional.helpers import Server, acar_json
from tests.functional.test_signing_callbacks import receiver

FIN = "7BRWSR1"


@pytest.fixture
def signing_site(cli_env: dict[str, str], services: Services, tmp_path: Path) -> Iterator[Server]:
    """`acar serve` as tests/browser/conftest.py's `site`, with approvals at level substantial."""
    with serving_site(cli_env, tmp_path, ACAR_SIGNING_APPROVAL_LEVEL="substantial") as server:
        yield server


async def test_agency_request_signer_approves_in_the_browser(signing_site: Server, context: BrowserContext,
                                                             page: Page, tmp_path: Path) -> None:
    site = signing_site
    add_person(site, FIN)
    agency = acar_json(site.env, "client", "add", "--name", "Vergilər Nazirliyi",  # type: ignore[attr-defined]
                       "--grant-type", "client_credentials", "--scope", "signing")
    await virtual_authenticator(page)
    await context.add_init_script(NO_CONDITIONAL_UI)
    await enroll(page, site, activation_code(site, FIN))

    pdfs = [text_pdf("Beyanname", "Sehife 2"), text_pdf("Akt")]
    with receiver(200) as agency_endpoint:
        await _sign_request_flow(site, agency, page, pdfs, callback_url=agency_endpoint.url, tmp_path=tmp_path)
        for _ in range(300):
            if agency_endpoint.posts:
                break
            await asyncio.sleep(0.1)
    assert len(agency_endpoint.posts) == 1
    post = agency_endpoint.posts[0]
    assert post.headers["content-type"] == "application/jwt"
    async with httpx.AsyncClient(base_url=site.base) as http:
        jwks = (await http.get("/jwks.json")).json()
    token = post.body.decode()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["ES256"], audience=agency["client_id"], issuer=site.base,
                        options={"require": ["iss", "aud", "iat", "exp", "jti"]})
    assert claims["state"] == "completed"
    assert [d["sha256"] for d in claims["documents"]] == [
        hashlib.sha256((tmp_path / f"signed-{n}.pdf").read_bytes()).hexdigest() for n in (1, 2)]


async def _sign_request_flow(site: Server, agency: dict[str, str], page: Page, pdfs: list[bytes], *, callback_url: str,
                             tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=site.base) as http:
        r = await http.post("/token", data={"grant_type": "client_credentials", "scope": "signing"},
                            auth=(agency["client_id"], agency["client_secret"]))
        assert r.status_code == 200, r.text
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = await http.post("/api/v1/signing-requests", headers=headers, json={
            "mode": "sign", "signer_fin": FIN, "reason": "Bəyannamə 2026", "callback_url": callback_url,
            "documents": [{"filename": "beyanname.pdf", "content": base64.b64encode(pdfs[0]).decode()},
                          {"filename": "akt.pdf", "content": base64.b64encode(pdfs[1]).decode()}]})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["state"] == "pending"

        await page.goto(created["approval_url"])
        await page.wait_for_url(re.compile(r"/interaction/[A-Za-z0-9_-]+$"))
        await page.click("#passkey-button")
        await page.wait_for_url(created["approval_url"])
        await page.wait_for_selector("#passkey-button")
        assert "Vergilər Nazirliyi" in await page.inner_text("#sign-agency")
        images = page.locator("ol.previews img")
        assert await images.count() == 3
        for index in range(3):
            image = images.nth(index)
            await image.scroll_into_view_if_needed()
            await page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                         arg=await image.element_handle())
        for document in created["documents"]:
            assert await page.inner_text(f"#document-{document['n']}-sha256") == document["sha256"]
        assert await axe_violations(page) == []
        await page.click("#passkey-button")
        await page.wait_for_selector("#sign-state")
        assert await axe_violations(page) == []

        for _ in range(600):
            r = await http.get(f"/api/v1/signing-requests/{created['id']}", headers=headers)
            assert r.status_code == 200, r.text
            if r.json()["state"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.1)
        assert r.json()["state"] == "completed", r.text
        for document, original in zip(r.json()["documents"], pdfs, strict=True):
            r = await http.get(f"/api/v1/signing-requests/{created['id']}/documents/{document['n']}",
                               headers=headers)
            assert r.status_code == 200 and r.content.startswith(original)
            path = tmp_path / f"signed-{document['n']}.pdf"
            path.write_bytes(r.content)
            info = await asyncio.to_thread(subprocess.run, ["pdfsig", "-nocert", str(path)], capture_output=True,
                                           text=True, check=False, timeout=60)
            assert f"PNOAZ-{FIN}" in info.stdout, info.stdout + info.stderr
