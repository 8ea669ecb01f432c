"""The signer's approval on the real signing tables (signing.sql.approval_store), end to end in process: an agency
creates a sign-mode request through /api/v1/signing-requests, the signer signs in through the page's login with an
attested passkey (level high), sees the previews, approves with an assertion over the derived challenge, the request
is approved with one job per document and the signer's own key (made on first use), the worker signs, and the
agency downloads PDFs whose signatures validate to Açar's root and name the person (PNOAZ-<FIN>); refusals change
nothing (both databases)."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from api.deps import Services
from idp.core.interfaces import Subject
from idp.sql.models import AuthorizationRequest
from signing.core.approval import derive_challenge
from signing.sql.models import SignerKey, SigningJob, SigningRequest
from storage.audit import AuditEvent
from tests.approval_tools import text_pdf
from tests.oidc_tools import ISSUER, asgi_browser
from tests.passkey_tools import ORIGIN, enrolled_attested
from tests.signing_tools import prepared, register_agency, verify_signed
from tests.unit.idp.test_webauthn import MODEL, require_attestation
from tests.webauthn_authenticator import (
    CSRF,
    AttestationCa,
    SoftwareAuthenticator,
    passkey_login,
)

API = "/api/v1/signing-requests"
FIN = "5ABCD12"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _signer(services: Services, app: FastAPI, vendor: AttestationCa, fin: str) -> SoftwareAuthenticator:
    return await enrolled_attested(services, app, vendor, fin, MODEL)


async def _sign_in(services: Services, browser: httpx.AsyncClient, url: str,
                   authenticator: SoftwareAuthenticator) -> httpx.Response:
    r = await browser.get(url)
    assert r.status_code == 303, r.text
    pending_id = r.headers["location"].rsplit("/", 1)[1]
    async with services.sessions() as session:
        row = await session.get(AuthorizationRequest, pending_id)
        assert row is not None
        csrf = row.csrf_token
    r = await passkey_login(browser, pending_id, csrf, authenticator)
    assert r.status_code == 200 and r.json() == {"redirect": url}, r.text
    return await browser.get(url)


async def _until_finished(client: httpx.AsyncClient, headers: dict[str, str], request_id: str) -> dict[str, Any]:
    for _ in range(600):
        r = await client.get(f"{API}/{request_id}", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["state"] in ("completed", "failed", "rejected", "expired"):
            return dict(r.json())
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {request_id} did not finish: {r.json()}")


async def _state(services: Services, request_id: str) -> tuple[str, list[int]]:
    async with services.sessions() as session:
        state = (await session.execute(select(SigningRequest.state)
                                       .where(SigningRequest.id == request_id))).scalar_one()
        jobs = (await session.execute(select(SigningJob.n).where(SigningJob.request_id == request_id)
                                      .order_by(SigningJob.n))).scalars().all()
    return state, list(jobs)


@pytest.fixture
def vendor() -> AttestationCa:
    return AttestationCa()


async def test_agency_request_signer_approves(initialized: Services, app: FastAPI, client: httpx.AsyncClient,
                                              vendor: AttestationCa, tmp_path: Any) -> None:
    root = await prepared(initialized)
    require_attestation(initialized, vendor, tmp_path, [MODEL])
    agency = await register_agency(initialized, client, seal=False)
    signer = await _signer(initialized, app, vendor, FIN)
    pdfs = [text_pdf("Bəyannamə", "Səhifə 2"), text_pdf("Akt")]
    r = await client.post(API, headers=agency.headers, json={
        "mode": "sign", "signer_fin": FIN, "reason": "Bəyannamə 2026",
        "documents": [{"filename": "beyanname.pdf", "content": _b64(pdfs[0])},
                      {"filename": "akt.pdf", "content": _b64(pdfs[1])}]})
    assert r.status_code == 201, r.text
    created = r.json()
    request_id, url = created["id"], created["approval_url"]
    assert url == f"{ISSUER}/sign/{request_id}"

    async with asgi_browser(app) as browser:
        page = await _sign_in(initialized, browser, url, signer)
        assert page.status_code == 200, page.text
        assert "beyanname.pdf" in page.text and "Bəyannamə 2026" in page.text
        r = await browser.get(f"/sign/{request_id}/documents/1/pages/2.png")
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
        csrf = re.search(r'data-csrf="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = await browser.post(f"/sign/{request_id}/options", json={}, headers={CSRF: csrf, "Origin": ORIGIN})
        assert r.status_code == 200, r.text
        begun = r.json()
        digests = [d["sha256"] for d in created["documents"]]
        assert begun["publicKey"]["challenge"] == derive_challenge(request_id, digests).base64url
        credential = signer.get(begun["publicKey"])
        r = await browser.post(f"/sign/{request_id}/approve", json={"ceremony": begun["ceremony"],
                                                                     "credential": credential},
                               headers={CSRF: csrf, "Origin": ORIGIN})
        assert r.status_code == 200, r.text
    state, jobs = await _state(initialized, request_id)
    assert state != "pending" and jobs == [1, 2]
    async with initialized.sessions() as session:
        [approved] = (await session.execute(select(AuditEvent).where(
            AuditEvent.event_type == "signing.request.approved", AuditEvent.subject == request_id))).scalars().all()
        [key] = (await session.execute(select(SignerKey).where(SignerKey.fin == FIN))).scalars().all()
    assert approved.detail["credential"] == credential["id"] and approved.detail["level"] == "high"
    assert approved.detail["key_id"] == key.key_id

    # the worker signs with the signer's own key; the agency downloads the signed PDFs
    done = await _until_finished(client, agency.headers, request_id)
    assert done["state"] == "completed", done
    for document, original in zip(done["documents"], pdfs, strict=True):
        r = await client.get(f"{API}/{request_id}/documents/{document['n']}", headers=agency.headers)
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
        assert r.content.startswith(original)  # an incremental update of exactly what was approved
        subjects = await verify_signed(r.content, root)
        assert any(f"PNOAZ-{FIN}" in subject for subject in subjects), subjects


async def test_reject_and_refusals_change_nothing(initialized: Services, app: FastAPI, client: httpx.AsyncClient,
                                                  vendor: AttestationCa, tmp_path: Any) -> None:
    require_attestation(initialized, vendor, tmp_path, [MODEL])
    agency = await register_agency(initialized, client, seal=False)
    signer = await _signer(initialized, app, vendor, FIN)
    ids = []
    for text in ("Birinci", "İkinci"):
        r = await client.post(API, headers=agency.headers, json={
            "mode": "sign", "signer_fin": FIN, "documents": [{"filename": "a.pdf", "content": _b64(text_pdf(text))}]})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    first, second = ids
    async with asgi_browser(app) as browser:
        page = await _sign_in(initialized, browser, f"{ISSUER}/sign/{first}", signer)
        csrf = re.search(r'data-csrf="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = await browser.post(f"/sign/{second}/options", json={}, headers={CSRF: csrf, "Origin": ORIGIN})
        begun = r.json()
        r = await browser.post(f"/sign/{first}/approve", json={
            "ceremony": begun["ceremony"], "credential": signer.get(begun["publicKey"])},
            headers={CSRF: csrf, "Origin": ORIGIN})
        assert r.status_code == 400, r.text
        assert await _state(initialized, first) == ("pending", []) == await _state(initialized, second)
        r = await browser.post(f"/sign/{first}/reject", data={"csrf_token": csrf})
        assert r.status_code == 303
    assert await _state(initialized, first) == ("rejected", [])
    r = await client.get(f"{API}/{first}", headers=agency.headers)
    assert r.json()["state"] == "rejected"


async def test_the_memory_store_of_the_page_tests_answers_as_the_sql_store(initialized: Services,
                                                                         client: httpx.AsyncClient) -> None:
    """tests.approval_tools.MemoryApprovalStore (the in-process page and browser tests) against SqlApprovalStore on
    the same request: the same view, contents and decisions, so the fake cannot drift from the real store."""
    import datetime as dt

    from signing.core.requests import Submission, SubmittedDocument
    from signing.sql.approval_store import SqlApprovalStore
    from tests.approval_tools import MemoryApprovalStore

    await prepared(initialized)
    agency = await register_agency(initialized, client, seal=False)
    documents = [("beyanname.pdf", text_pdf("Bir", "Iki"), 2), ("akt.pdf", text_pdf("Akt"), 1)]
    created, _ = await initialized.signing.requests.create(agency.client_id, Submission(
        mode="sign", signer_fin=FIN, reason="Bəyannamə", location="Bakı",
        documents=[SubmittedDocument(name, content) for name, content, _ in documents]))
    memory = MemoryApprovalStore()
    memory.add(created.id, client_id=agency.client_id, signer_fin=FIN, documents=documents, reason="Bəyannamə",
               location="Bakı", expires_at=created.expires_at)
    now = dt.datetime.now(dt.UTC)

    async def both(call: str, *args: Any, **kw: Any) -> Any:
        async with initialized.direct.transaction() as tx:
            real = await getattr(SqlApprovalStore(tx), call)(*args, **kw)
        fake = await getattr(memory, call)(*args, **kw)
        assert real == fake, (call, real, fake)
        return real

    await both("approval_request", created.id)
    await both("approval_request", "no-such-request")
    await both("approval_request", "x" * 300)
    await both("document_content", created.id, 2)
    await both("document_content", created.id, 3)
    assert initialized.approval is not None
    async with initialized.sessions() as session, session.begin():
        subject = Subject(person_id="p", fin=FIN, given_name="Aysel", family_name="Məmmədova", birthdate=None)
        key_id = await initialized.approval.signer_keys(session, subject)
    assert await both("approve_request", created.id, key_id=key_id, now=now) is True
    assert await both("approve_request", created.id, key_id=key_id, now=now) is False
    assert await both("reject_request", created.id, now=now) is False
    view = await both("approval_request", created.id)
    assert view.state == "approved"
    assert [n for _, n in memory.jobs] == (await _state(initialized, created.id))[1] == [1, 2]
