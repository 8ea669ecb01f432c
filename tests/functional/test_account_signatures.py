"""The signature history of the account page with a real signature (both databases): an agency asks a person to
sign, the person approves with their passkey, the worker signs; the person's account lists the document, for whom
and when, and its report validates the stored signed PDF with the real validator (pyHanko) while it is retained;
after the retention's purge the page says the document was deleted. Another person gets 404 for the same report."""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from api.deps import Services
from signing.sql.store import SqlSigningStore
from storage.audit import AuditEvent
from storage.base import utcnow
from tests.approval_tools import text_pdf
from tests.functional.test_signing_approval import _sign_in, _signer, _until_finished, vendor  # noqa: F401
from tests.oidc_tools import asgi_browser
from tests.passkey_tools import ORIGIN
from tests.signing_tools import prepared, register_agency
from tests.unit.api.test_pages import check_page, t
from tests.unit.idp.test_webauthn import MODEL, require_attestation
from tests.webauthn_authenticator import CSRF, AttestationCa

API = "/api/v1/signing-requests"
FIN, OTHER_FIN = "5ABCD12", "7XYZW34"


async def test_signature_history_and_its_report(initialized: Services, app: FastAPI, client: httpx.AsyncClient,
                                                vendor: AttestationCa, tmp_path: Any) -> None:  # noqa: F811
    await prepared(initialized)
    require_attestation(initialized, vendor, tmp_path, [MODEL])
    agency = await register_agency(initialized, client, seal=False)
    signer = await _signer(initialized, app, vendor, FIN)
    other = await _signer(initialized, app, vendor, OTHER_FIN)
    r = await client.post(API, headers=agency.headers, json={
        "mode": "sign", "signer_fin": FIN, "reason": "Bəyannamə 2026",
        "documents": [{"filename": "beyanname.pdf", "content": base64.b64encode(text_pdf("Bəyannamə")).decode()}]})
    assert r.status_code == 201, r.text
    request_id, url = r.json()["id"], r.json()["approval_url"]

    async with asgi_browser(app) as browser, asgi_browser(app) as stranger:
        page = await _sign_in(initialized, browser, url, signer)
        csrf = re.search(r'data-csrf="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = await browser.post(f"/sign/{request_id}/options", json={}, headers={CSRF: csrf, "Origin": ORIGIN})
        begun = r.json()
        r = await browser.post(f"/sign/{request_id}/approve", json={
            "ceremony": begun["ceremony"], "credential": signer.get(begun["publicKey"])},
            headers={CSRF: csrf, "Origin": ORIGIN})
        assert r.status_code == 200, r.text
        assert (await _until_finished(client, agency.headers, request_id))["state"] == "completed"

        r = await browser.get("/account", headers={"Accept-Language": "en"})
        page_text = check_page(r, "en").text
        assert "beyanname.pdf" in page_text and "Bəyannamə 2026" in page_text and "Tax system" in page_text
        report_path = f"/account/signatures/{request_id}/1/report"
        assert f'href="{report_path}"' in r.text
        r = await browser.get(report_path, headers={"Accept-Language": "az"})
        assert r.status_code == 200, r.text
        report_page = check_page(r, "az")
        assert 'id="verify-report"' in r.text and "beyanname.pdf" in report_page.text
        assert f"PNOAZ-{FIN}" in r.text  # the signer's identifier, read from the signature by pyHanko
        summary = re.search(r'<div role="status" id="verify-summary" class="notice ([a-z-]+)"', r.text)
        assert summary is not None and summary.group(1) == "notice-success", r.text[:2000]

        # another person, signed in, asks for the same report: 404, nothing validated for them
        await _sign_in_other(initialized, stranger, other, client=client, agency=agency)
        async with initialized.sessions() as session:
            before = len((await session.execute(select(AuditEvent.id).where(
                AuditEvent.event_type == "validation.performed"))).all())
        r = await stranger.get(report_path, headers={"Accept-Language": "en"})
        assert r.status_code == 404 and "beyanname.pdf" not in r.text
        assert "beyanname.pdf" not in (await stranger.get("/account")).text
        async with initialized.sessions() as session:
            after = len((await session.execute(select(AuditEvent.id).where(
                AuditEvent.event_type == "validation.performed"))).all())
        assert after == before

        # the retention ran out: the document is gone, its report cannot be made, the page says so
        async with initialized.direct.transaction() as tx:
            assert await SqlSigningStore(tx).purge_contents(utcnow() + dt.timedelta(hours=1), utcnow()) == 1
        r = await browser.get("/account", headers={"Accept-Language": "ru"})
        assert t("ru", "account.signatures.purged") in check_page(r, "ru").text
        assert f'href="{report_path}"' not in r.text
        r = await browser.get(report_path, headers={"Accept-Language": "ru"})
        assert r.status_code == 200 and t("ru", "account.report.purged") in check_page(r, "ru").text
        assert 'id="verify-report"' not in r.text


async def _sign_in_other(services: Services, browser: httpx.AsyncClient, authenticator: Any, *,
                         client: httpx.AsyncClient, agency: Any) -> None:
    """Sign the other person in through the approval page of a request of their own (the passkey login)."""
    r = await client.post(API, headers=agency.headers, json={
        "mode": "sign", "signer_fin": OTHER_FIN,
        "documents": [{"filename": "onun.pdf", "content": base64.b64encode(text_pdf("Akt")).decode()}]})
    assert r.status_code == 201, r.text
    page = await _sign_in(services, browser, r.json()["approval_url"], authenticator)
    assert page.status_code == 200
    assert (await browser.get("/account")).status_code == 200

