"""Passkeys on an issuer that is not http://localhost:8000, with only ACAR_ISSUER set: the relying party's origin
and RP ID follow the issuer (api.settings), so every ceremony works; a page opened at another address is refused
as what it is (wrong_origin, logged with both origins), never as an expired page."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from api.deps import Services
from api.i18n import translator
from api.rendering import passkey_messages
from api.settings import Settings
from idp.sql.models import AuthorizationRequest, WebAuthnCredential
from tests.oidc_tools import authorization_params, pkce_pair, register_client, register_person
from tests.passkey_tools import events, issue_code, refused
from tests.webauthn_authenticator import CSRF, SoftwareAuthenticator, enroll_with_code, passkey_login

ISSUER = "http://localhost:9000"
"""The issuer of this module's settings: another port than the development default."""
OLD_ADDRESS = "http://localhost:8000"


@pytest.fixture
def settings(database_url: str, master_key_file: Path, tmp_path: Path) -> Settings:
    """The test settings with only the issuer moved: no ACAR_WEBAUTHN_* setting."""
    return Settings(env="development", issuer=ISSUER, data_dir=tmp_path, database_url=database_url,
                    master_key_file=master_key_file, key_cache_seconds=0)


def browser_at(app: FastAPI, origin: str) -> httpx.AsyncClient:
    """A browser whose pages were opened at `origin`: its fetch() calls carry that Origin header."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER, headers={"Origin": origin})


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with browser_at(app, ISSUER) as c:
        yield c


async def start(services: Services, http: httpx.AsyncClient) -> tuple[str, str]:
    """GET /authorize of a registered client up to the login interaction: its pending id and CSRF token."""
    _verifier, challenge = pkce_pair()
    r = await http.get("/authorize", params=authorization_params(await register_client(services), challenge))
    assert r.status_code == 303 and r.headers["location"].startswith("/interaction/"), r.text
    pending_id = r.headers["location"].split("/")[2]
    async with services.sessions() as session:
        row = await session.get(AuthorizationRequest, pending_id)
        assert row is not None
        return pending_id, row.csrf_token


async def test_registration_and_login_on_an_issuer_at_another_port(initialized: Services,
                                                                   browser: httpx.AsyncClient) -> None:
    assert initialized.passkeys.rp.origins == (ISSUER,) and initialized.passkeys.rp.id == "localhost"
    authenticator = SoftwareAuthenticator(origin=ISSUER)
    person_id = await register_person(initialized)
    r = await enroll_with_code(browser, await issue_code(initialized, person_id), authenticator)
    assert r.status_code == 201, r.text
    browser.cookies.clear()
    pending_id, csrf = await start(initialized, browser)
    r = await passkey_login(browser, pending_id, csrf, authenticator)
    assert r.status_code == 200, r.text
    assert r.json() == {"redirect": f"/interaction/{pending_id}/consent"}


async def test_a_page_opened_at_another_address_is_told_so(initialized: Services, app: FastAPI,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="acar.api")
    code = await issue_code(initialized, await register_person(initialized))
    async with browser_at(app, OLD_ADDRESS) as old:
        body = refused(await old.post("/webauthn/enrollment", json={"code": code}), 403, "wrong_origin")
    assert body["title"] == "The page was opened at an address this service is not configured for"
    [record] = [r for r in caplog.records if r.getMessage() == "webauthn.wrong_origin"]
    assert (record.received, record.expected) == (OLD_ADDRESS, [ISSUER])  # type: ignore[attr-defined]
    # the page shows it in the citizen's language, and does not call it an expired page
    for lang in ("az", "en", "ru"):
        message = passkey_messages(translator(lang))["errors"]["wrong_origin"]
        assert message and message != passkey_messages(translator(lang))["errors"]["csrf"]
    assert "address" in passkey_messages(translator("en"))["errors"]["wrong_origin"]


async def test_client_data_from_another_origin_is_told_so(initialized: Services, browser: httpx.AsyncClient,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """clientDataJSON naming another origin (WebAuthn Level 2 section 7.1 step 9) is wrong_origin too, after the
    Origin header passed; nothing is registered and the failure is audited."""
    caplog.set_level(logging.WARNING, logger="acar.api")
    code = await issue_code(initialized, await register_person(initialized))
    r = await browser.post("/webauthn/enrollment", json={"code": code})
    assert r.status_code == 201, r.text
    csrf = r.json()["csrf_token"]
    r = await browser.post("/webauthn/register/options", json={}, headers={CSRF: csrf})
    assert r.status_code == 200, r.text
    credential = SoftwareAuthenticator(origin=OLD_ADDRESS).create(r.json()["publicKey"])
    r = await browser.post("/webauthn/register/verify", json={"ceremony": r.json()["ceremony"],
                                                             "credential": credential}, headers={CSRF: csrf})
    refused(r, 403, "wrong_origin")
    [record] = [r for r in caplog.records if r.getMessage() == "webauthn.wrong_origin"]
    assert (record.received, record.expected) == (OLD_ADDRESS, [ISSUER])  # type: ignore[attr-defined]
    assert [e.detail for e in await events(initialized, "webauthn.registration_failed")] == [{"code": "wrong_origin"}]
    async with initialized.sessions() as session:
        assert (await session.execute(select(WebAuthnCredential.id))).all() == []
