"""The agency signing API through HTTP on the app (both databases): seal requests as JSON and multipart signed by
the in-process worker and validated with pyHanko trusting Açar's root; idempotency; only the creating client sees
a request; scopes; every refusal a specific problem with nothing stored; sign mode answers the approval URL."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import io
import json
from typing import Any

import httpx
import pytest
from pyhanko.pdf_utils.reader import PdfFileReader
from sqlalchemy import func, select

from api.app import create_app
from api.deps import Services
from signing.sql.models import SigningDocument, SigningJob, SigningRequest
from storage.audit import AuditEvent
from tests.functional.helpers import InProcessAcar
from tests.oidc_tools import asgi_browser
from tests.pdf_tools import hybrid_reference_pdf, simple_pdf
from tests.signing_tools import (
    ORGANIZATION,
    VOEN,
    Agency,
    agency_token,
    minimal_pdf,
    prepared,
    register_agency,
    root_certificate,
    verify_signed,
)

API = "/api/v1/signing-requests"
PROBLEM = "application/problem+json"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _until_finished(client: httpx.AsyncClient, agency: Agency, request_id: str) -> dict[str, Any]:
    for _ in range(600):
        r = await client.get(f"{API}/{request_id}", headers=agency.headers)
        assert r.status_code == 200, r.text
        if r.json()["state"] in ("completed", "failed", "rejected", "expired"):
            return dict(r.json())
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {request_id} did not finish: {r.json()}")


async def _rows(services: Services) -> dict[str, int]:
    async with services.sessions() as session:
        return {model.__tablename__: int((await session.execute(select(func.count()).select_from(model))).scalar_one())
                for model in (SigningRequest, SigningDocument, SigningJob)}


async def test_seal_request_as_json_is_signed_and_validates(client: httpx.AsyncClient, initialized: Services) -> None:
    root = await prepared(initialized)
    agency = await register_agency(initialized, client)
    pdfs = [minimal_pdf(1, "Arayış"), minimal_pdf(3, "Müqavilə")]
    r = await client.post(API, headers=agency.headers, json={
        "mode": "seal", "reason": "Arayış", "location": "Bakı",
        "documents": [{"filename": "arayis.pdf", "content": _b64(pdfs[0])},
                      {"filename": "muqavile.pdf", "content": _b64(pdfs[1])}]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["location"] == f"{API}/{created['id']}" and r.headers["cache-control"] == "no-store"
    assert created["approval_url"] is None and created["level"] == "B-LT"
    assert [(d["n"], d["filename"], d["sha256"], d["pages"]) for d in created["documents"]] == [
        (1, "arayis.pdf", hashlib.sha256(pdfs[0]).hexdigest(), 1),
        (2, "muqavile.pdf", hashlib.sha256(pdfs[1]).hexdigest(), 3)]
    done = await _until_finished(client, agency, created["id"])
    assert done["state"] == "completed", done
    for document, original in zip(done["documents"], pdfs, strict=True):
        r = await client.get(f"{API}/{created['id']}/documents/{document['n']}", headers=agency.headers)
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
        signed = r.content
        assert signed.startswith(original)  # an incremental update: the input is kept byte for byte
        assert hashlib.sha256(signed).hexdigest() == document["signed_sha256"]
        subjects = await verify_signed(signed, root)
        assert any("NTRAZ-1234567891" in s for s in subjects), subjects
        reader = PdfFileReader(io.BytesIO(signed))  # B-LT, the default: validation data in the DSS, time-stamped
        signer_info = reader.embedded_signatures[0].signer_info
        assert "/DSS" in reader.root and "signature_time_stamp_token" in [
            attribute["type"].native for attribute in signer_info["unsigned_attrs"]]
    async with initialized.sessions() as session:
        events = (await session.execute(select(AuditEvent.event_type).where(
            AuditEvent.subject == created["id"]))).scalars().all()
    assert sorted(events) == ["signing.document.signed", "signing.document.signed", "signing.request.completed",
                              "signing.request.created"]


async def test_seal_request_as_multipart(client: httpx.AsyncClient, initialized: Services) -> None:
    root = await prepared(initialized)
    agency = await register_agency(initialized, client)
    pdf = minimal_pdf(2)
    r = await client.post(API, headers=agency.headers, data={"mode": "seal", "level": "B-B", "reason": "Test",
                                                              "placement": '{"page": 2, "box": [50, 50, 250, 110]}'},
                          files=[("document", ("one.pdf", pdf, "application/pdf")),
                                 ("document", ("two.pdf", minimal_pdf(2), "application/pdf"))])
    assert r.status_code == 201, r.text
    assert [d["filename"] for d in r.json()["documents"]] == ["one.pdf", "two.pdf"]
    done = await _until_finished(client, agency, r.json()["id"])
    assert done["state"] == "completed" and done["level"] == "B-B", done
    signed = (await client.get(f"{API}/{done['id']}/documents/1", headers=agency.headers)).content
    await verify_signed(signed, root)


async def test_idempotency_key(client: httpx.AsyncClient, initialized: Services) -> None:
    await prepared(initialized)
    agency = await register_agency(initialized, client)
    body = {"mode": "seal", "documents": [{"filename": "a.pdf", "content": _b64(minimal_pdf())}]}
    headers = {**agency.headers, "Idempotency-Key": "order-42"}
    first = await client.post(API, headers=headers, json=body)
    again = await client.post(API, headers=headers, json=body)
    assert first.status_code == 201 and again.status_code == 200, (first.text, again.text)
    assert first.json()["id"] == again.json()["id"]
    other = await client.post(API, headers=headers, json={**body, "reason": "another"})
    assert other.status_code == 409 and other.headers["content-type"] == PROBLEM
    assert other.json()["code"] == "idempotency_key_reused"
    concurrent = await asyncio.gather(*(client.post(API, headers={**agency.headers, "Idempotency-Key": "k-7"},
                                                    json=body) for _ in range(4)))
    assert sorted(r.status_code for r in concurrent) == [200, 200, 200, 201]
    assert len({r.json()["id"] for r in concurrent}) == 1
    assert (await _rows(initialized))["signing_requests"] == 2


async def test_another_client_gets_404_and_scope_is_required(client: httpx.AsyncClient,
                                                             initialized: Services) -> None:
    await prepared(initialized)
    agency = await register_agency(initialized, client)
    stranger = await register_agency(initialized, client, name="Registry")
    r = await client.post(API, headers=agency.headers, json={
        "mode": "seal", "documents": [{"content": _b64(minimal_pdf())}]})
    assert r.status_code == 201, r.text
    request_id = r.json()["id"]
    for path in (f"{API}/{request_id}", f"{API}/{request_id}/documents/1", f"{API}/nonexistent"):
        r = await client.get(path, headers=stranger.headers)
        assert r.status_code == 404 and r.json()["code"] == "not_found", (path, r.text)
    unscoped = await register_agency(initialized, client, name="Other API", scopes=("tax:read",), seal=False)
    r = await client.get(f"{API}/{request_id}", headers=unscoped.headers)
    assert r.status_code == 403 and r.json()["type"] == "urn:acar:problem:insufficient_scope"
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    r = await client.get(f"{API}/{request_id}")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = await client.get(f"{API}/{request_id}", headers={"Authorization": "Bearer " + agency.token[:-3] + "AAA"})
    assert r.status_code == 401 and r.json()["type"] == "urn:acar:problem:invalid_token"
    # a token for another scope only, of a client that may have `signing`, is refused too
    narrower = await agency_token(client, agency.client_id, agency.secret, scope="")
    r = await client.get(f"{API}/{request_id}", headers={"Authorization": f"Bearer {narrower}"})
    assert r.status_code in (401, 403)


async def test_sign_mode_is_pending_with_an_approval_url(client: httpx.AsyncClient, initialized: Services) -> None:
    await prepared(initialized)
    agency = await register_agency(initialized, client, seal=False)
    r = await client.post(API, headers=agency.headers, json={
        "mode": "sign", "signer_fin": "5abcd12", "documents": [{"content": _b64(minimal_pdf())}]})
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "pending"
    assert r.json()["approval_url"] == f"{initialized.settings.issuer}/sign/{r.json()['id']}"
    r = await client.get(f"{API}/{r.json()['id']}/documents/1", headers=agency.headers)
    assert r.status_code == 409 and r.json()["code"] == "not_completed"
    assert (await _rows(initialized))["signing_jobs"] == 0


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"mode": "seal", "documents": [{"content": _b64(b"hello, not a PDF")}]}, 415, "not_pdf"),
    ({"mode": "seal", "documents": [{"content": _b64(simple_pdf(
        catalog_extra=b"/OpenAction << /S /JavaScript /JS (app.alert(1)) >>"))}]}, 422, "active_content"),
    ({"mode": "seal", "documents": [{"content": "%%%not base64"}]}, 422, "invalid_document"),
    ({"mode": "seal", "level": "B-X", "documents": [{"content": _b64(minimal_pdf())}]}, 422, "invalid_level"),
    ({"mode": "sign", "documents": [{"content": _b64(minimal_pdf())}]}, 422, "signer_required"),
    ({"mode": "sign", "signer_fin": "12", "documents": [{"content": _b64(minimal_pdf())}]}, 422, "invalid_fin"),
    ({"mode": "stamp", "documents": [{"content": _b64(minimal_pdf())}]}, 422, "invalid_request"),
    ({"mode": "seal", "documents": []}, 422, "invalid_request"),
    ({"mode": "seal", "placement": {"page": 3, "box": [0, 0, 10, 10]},
      "documents": [{"content": _b64(minimal_pdf())}]}, 422, "invalid_placement"),
    ({"mode": "seal", "callback_url": "ftp://agency.example/cb", "documents": [{"content": _b64(minimal_pdf())}]},
     422, "invalid_callback_url"),
    ({"mode": "seal", "documents": [{"content": _b64(minimal_pdf())}, {"content": _b64(b"%PDF-1.7 broken")}]},
     422, "damaged_pdf"),
    ({"mode": "seal", "reason": "a\u0000b", "documents": [{"content": _b64(minimal_pdf())}]}, 422, "invalid_request"),
    ({"mode": "seal", "documents": [{"filename": "\ud800.pdf", "content": _b64(minimal_pdf())}]}, 422,
     "invalid_request"),  # not UTF-8: refused by the schema's own string check
    ({"mode": "seal", "extra": 1, "documents": [{"content": _b64(minimal_pdf())}]}, 422, "invalid_request"),
])
async def test_bad_input_is_refused_and_nothing_stored(client: httpx.AsyncClient, initialized: Services,
                                                       body: dict[str, Any], status: int, code: str) -> None:
    await prepared(initialized)
    agency = await register_agency(initialized, client)
    r = await client.post(API, headers={**agency.headers, "content-type": "application/json"},
                          content=json.dumps(body).encode())  # ASCII JSON: a lone surrogate as its \u escape
    assert r.status_code == status and r.headers["content-type"] == PROBLEM, r.text
    assert r.json()["code"] == code, r.text
    assert await _rows(initialized) == {"signing_requests": 0, "signing_documents": 0, "signing_jobs": 0}


async def test_limits_too_large_and_too_many(client: httpx.AsyncClient, initialized: Services) -> None:
    await prepared(initialized)
    agency = await register_agency(initialized, client)
    policy = initialized.signing.requests.policy
    initialized.settings.signing_max_documents = 2
    initialized.signing.requests.policy = dataclasses.replace(policy, max_documents=2)
    try:
        files = [("document", (f"{i}.pdf", minimal_pdf(), "application/pdf")) for i in range(3)]
        r = await client.post(API, headers=agency.headers, data={"mode": "seal"}, files=files)
        assert r.status_code == 422 and r.json()["code"] == "too_many_documents", r.text
        r = await client.post(API, headers=agency.headers, json={
            "mode": "seal", "documents": [{"content": _b64(minimal_pdf())}] * 3})
        assert r.status_code == 422 and r.json()["code"] == "too_many_documents", r.text
    finally:
        initialized.settings.signing_max_documents = policy.max_documents
        initialized.signing.requests.policy = policy
    big = minimal_pdf() + b"%" + b"x" * initialized.settings.signing_max_document_bytes
    r = await client.post(API, headers=agency.headers, data={"mode": "seal"},
                          files=[("document", ("big.pdf", big, "application/pdf"))])
    assert r.status_code == 413 and r.json()["code"] == "too_large", r.text
    r = await client.post(API, headers={**agency.headers, "content-type": "text/plain"}, content=b"mode=seal")
    assert r.status_code == 415 and r.headers["content-type"] == PROBLEM
    assert await _rows(initialized) == {"signing_requests": 0, "signing_documents": 0, "signing_jobs": 0}


async def test_seal_request_without_a_seal(client: httpx.AsyncClient, initialized: Services) -> None:
    await prepared(initialized)
    agency = await register_agency(initialized, client, seal=False)
    r = await client.post(API, headers=agency.headers, json={"mode": "seal",
                                                              "documents": [{"content": _b64(minimal_pdf())}]})
    assert r.status_code == 409 and r.json()["code"] == "no_seal", r.text
    assert f"acar seal assign {agency.client_id}" in r.json()["detail"]
    assert (await _rows(initialized))["signing_requests"] == 0


async def test_the_signing_path_takes_larger_bodies_than_the_rest(initialized: Services) -> None:
    """ACAR_MAX_BODY_BYTES (1 MiB) caps every route but this one, which takes ACAR_SIGNING_MAX_REQUEST_BYTES."""
    await prepared(initialized)
    initialized.settings.signing_max_request_bytes = 3 * 1024 * 1024
    app = create_app(services=initialized)
    async with app.router.lifespan_context(app), asgi_browser(app) as http:
        agency = await register_agency(initialized, http)
        large = minimal_pdf(1, "x" * (2 * 1024 * 1024))
        r = await http.post(API, headers=agency.headers, data={"mode": "seal"},
                            files=[("document", ("large.pdf", large, "application/pdf"))])
        assert r.status_code == 201, r.text
        assert (await _until_finished(http, agency, r.json()["id"]))["state"] == "completed"
        r = await http.post(API, headers=agency.headers, data={"mode": "seal"},
                            files=[("document", ("huge.pdf", large * 2, "application/pdf"))])
        assert r.status_code == 413 and r.json()["type"] == "urn:acar:problem:content_too_large", r.text
        r = await http.post("/admin/clients", headers={**agency.headers, "content-type": "application/json"},
                            content=b" " * len(large))
        assert r.status_code == 413, r.text
    assert (await _rows(initialized))["signing_requests"] == 1


async def test_seal_assign_command(initialized: Services, acar: InProcessAcar, client: httpx.AsyncClient) -> None:
    await prepared(initialized)
    agency = await register_agency(initialized, client, seal=False)
    # the command runs in a thread: the app's event loop goes on (its worker and housekeeping end their units)
    refused = await asyncio.to_thread(acar, "seal", "assign", "no-such-client", "--voen", VOEN, "--organization",
                                      "X", check=False)
    assert refused.returncode == 1 and "no client" in refused.stderr
    refused = await asyncio.to_thread(acar, "seal", "assign", agency.client_id, "--voen", "12345",
                                      "--organization", "X", check=False)
    assert refused.returncode == 1 and "VÖEN" in refused.stderr
    first = await asyncio.to_thread(acar.json, "seal", "assign", agency.client_id, "--voen", VOEN,
                                    "--organization", ORGANIZATION)
    assert first["new_key"] and first["signing_scope"] and first["voen"] == VOEN
    renamed = await asyncio.to_thread(acar.json, "seal", "assign", agency.client_id, "--voen", VOEN,
                                      "--organization", "Yeni ad")
    assert renamed["new_key"] and renamed["key_id"] != first["key_id"]  # another legal person: a new certificate
    r = await client.post(API, headers=agency.headers, json={"mode": "seal",
                                                              "documents": [{"content": _b64(minimal_pdf())}]})
    assert r.status_code == 201, r.text
    assert (await _until_finished(client, agency, r.json()["id"]))["state"] == "completed"
    signed = (await client.get(f"{API}/{r.json()['id']}/documents/1", headers=agency.headers)).content
    assert any("Yeni ad" in s for s in await verify_signed(signed, await root_certificate(initialized)))


async def test_a_file_pyhanko_refuses_is_repaired_before_it_is_stored_and_signed(client: httpx.AsyncClient,
                                                                                 initialized: Services) -> None:
    """signing.core.inspect: Word's hybrid-reference file is rewritten by qpdf at submission; the request's digest is
    the rewrite's (what gets signed), and the signature validates."""
    root = await prepared(initialized)
    agency = await register_agency(initialized, client)
    hybrid = hybrid_reference_pdf()
    r = await client.post(API, headers=agency.headers, data={"mode": "seal"},
                          files=[("document", ("word.pdf", hybrid, "application/pdf"))])
    assert r.status_code == 201, r.text
    assert r.json()["documents"][0]["sha256"] != hashlib.sha256(hybrid).hexdigest()
    done = await _until_finished(client, agency, r.json()["id"])
    assert done["state"] == "completed", done
    signed = (await client.get(f"{API}/{done['id']}/documents/1", headers=agency.headers)).content
    await verify_signed(signed, root)
