"""The PKI over HTTP: CA certificates, CRLs, OCSP over POST and GET, and the admin revocation API."""

from __future__ import annotations

import base64
import itertools
import urllib.parse

import httpx
import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from sqlalchemy import select

from api.auth import mint_admin_token
from api.deps import Services
from keys.pki import PkiService
from keys.profiles import Profile
from storage.audit import AuditEvent
from tests.pki_tools import MALFORMED_REQUEST, UNAUTHORIZED, crl_text, initialize_pki, issue_x509, ocsp_request


@pytest.fixture
async def pki(initialized: Services) -> PkiService:
    return await initialize_pki(initialized)


async def _issue(services: Services) -> x509.Certificate:
    return await issue_x509(services, Profile.NATURAL_PERSON_SIGNING)


async def test_ca_certificates_and_crls(client: httpx.AsyncClient, pki: PkiService) -> None:
    for name in ("root", "issuing"):
        r = await client.get(f"/pki/ca/{name}.crt")
        assert r.status_code == 200 and r.headers["content-type"] == "application/pkix-cert"
        assert x509.load_der_x509_certificate(r.content).subject.rfc4514_string().startswith(
            "CN=Açar Root CA" if name == "root" else "CN=Açar Issuing CA")
        r = await client.get(f"/pki/crl/{name}.crl")
        assert r.status_code == 200 and r.headers["content-type"] == "application/pkix-crl"
        assert "Certificate Revocation List" in crl_text(r.content)
    for path in ("/pki/ca/other.crt", "/pki/crl/other.crl"):
        r = await client.get(path)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


async def test_pki_endpoints_before_init(client: httpx.AsyncClient) -> None:
    r = await client.get("/pki/ca/root.crt")
    assert r.status_code == 503 and r.json()["type"] == "urn:acar:problem:ca_not_initialized"
    r = await client.post("/pki/ocsp", content=b"\x30\x00")
    assert r.status_code == 200 and r.content == UNAUTHORIZED  # RFC 5019 2.2.3: no CA to answer for


async def test_ocsp_over_post_and_get(client: httpx.AsyncClient, initialized: Services, pki: PkiService) -> None:
    cert = await _issue(initialized)
    issuing = x509.load_der_x509_certificate((await client.get("/pki/ca/issuing.crt")).content)
    request = ocsp_request(cert, issuing, nonce=b"0123456789abcdef")
    r = await client.post("/pki/ocsp", content=request, headers={"Content-Type": "application/ocsp-request"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/ocsp-response"
    assert r.headers["cache-control"] == "no-store"
    assert ocsp.load_der_ocsp_response(r.content).certificate_status == ocsp.OCSPCertStatus.GOOD

    # RFC 6960 appendix A.1: GET {url}/{url-encoding of base-64 encoding of the DER OCSPRequest}
    plain = ocsp_request(cert, issuing)
    encoded = base64.b64encode(plain).decode()
    for path in (urllib.parse.quote(encoded, safe=""), encoded, base64.urlsafe_b64encode(plain).decode().rstrip("=")):
        r = await client.get("/pki/ocsp/" + path)
        assert r.status_code == 200 and r.headers["content-type"] == "application/ocsp-response", path
        assert ocsp.load_der_ocsp_response(r.content).certificate_status == ocsp.OCSPCertStatus.GOOD
        assert r.headers["cache-control"] == "max-age=600, public, no-transform, must-revalidate"


async def test_ocsp_get_whose_base64_ends_in_a_slash(
    client: httpx.AsyncClient, initialized: Services, pki: PkiService
) -> None:
    """About one GET in 200 ends in "/" (a DER length divisible by 3 whose last 6 bits are all ones): the "/"
    belongs to the base64 and must not be taken for a path separator."""
    cert = await _issue(initialized)
    issuing = x509.load_der_x509_certificate((await client.get("/pki/ca/issuing.crt")).content)
    for attempt in itertools.count():  # vary the nonce (the request's last bytes) until the base64 ends in "/"
        nonce = attempt.to_bytes(4, "big") * 4 + b"\xff" * (attempt % 3)
        request = ocsp_request(cert, issuing, nonce=nonce)
        encoded = base64.b64encode(request).decode()
        if encoded.endswith("/"):
            break
    for path in (encoded, urllib.parse.quote(encoded, safe=""), "/" + encoded):  # raw, %2F, after a base URL "/"
        r = await client.get("/pki/ocsp/" + path)
        assert r.status_code == 200 and r.headers["content-type"] == "application/ocsp-response", path
        response = ocsp.load_der_ocsp_response(r.content)
        assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, path
        assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert response.serial_number == cert.serial_number
        assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


@pytest.mark.parametrize("send", [
    pytest.param(lambda c: c.post("/pki/ocsp", content=b"not DER"), id="post-garbage"),
    pytest.param(lambda c: c.post("/pki/ocsp", content=b""), id="post-empty"),
    pytest.param(lambda c: c.post("/pki/ocsp", content=b"\x30" * 70000), id="post-oversized"),
    pytest.param(lambda c: c.get("/pki/ocsp/%%%not-base64"), id="get-not-base64"),
    pytest.param(lambda c: c.get("/pki/ocsp/" + base64.b64encode(b"garbage").decode()), id="get-garbage"),
    pytest.param(lambda c: c.get("/pki/ocsp/" + "A" * 40000), id="get-oversized"),
])
async def test_malformed_ocsp_is_an_ocsp_answer_never_an_http_error(
    client: httpx.AsyncClient, pki: PkiService, send: object
) -> None:
    r = await send(client)  # type: ignore[operator]
    assert r.status_code == 200 and r.headers["content-type"] == "application/ocsp-response"
    assert r.content == MALFORMED_REQUEST
    assert ocsp.load_der_ocsp_response(r.content).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


async def _token(services: Services, scope: str) -> dict[str, str]:
    minted = await mint_admin_token(services, subject="operator-7", scopes={scope}, ttl_seconds=300)
    return {"Authorization": f"Bearer {minted['access_token']}"}


async def test_admin_revocation_api(client: httpx.AsyncClient, initialized: Services, pki: PkiService) -> None:
    cert = await _issue(initialized)
    serial = format(cert.serial_number, "x")
    path = f"/admin/certificates/{serial}/revoke"
    body = {"reason": "keyCompromise"}

    r = await client.post(path, json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = await client.post(path, json=body, headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401
    r = await client.post(path, json=body, headers=await _token(initialized, "acar:token:mint"))
    assert r.status_code == 403 and r.json()["type"] == "urn:acar:problem:insufficient_scope"

    revoker = await _token(initialized, "acar:cert:revoke")
    r = await client.post("/admin/certificates/abc123/revoke", json=body, headers=revoker)
    assert r.status_code == 404 and r.json()["type"] == "urn:acar:problem:certificate_not_found"
    r = await client.post(path, json={"reason": "because"}, headers=revoker)
    assert r.status_code == 422 and "keyCompromise" in r.json()["detail"]
    r = await client.post(path, json={"reason": "keyCompromise", "extra": 1}, headers=revoker)
    assert r.status_code == 422

    r = await client.post(path.replace(serial, serial.upper()), json=body, headers=revoker)
    assert r.status_code == 200, r.text
    view = r.json()
    assert (view["serial"], view["status"], view["revocation_reason"]) == (serial, "revoked", "keyCompromise")
    assert view["certificate_pem"].startswith("-----BEGIN CERTIFICATE-----")
    async with initialized.sessions() as session:
        events = (await session.execute(
            select(AuditEvent).where(AuditEvent.event_type == "certificate.revoked"))).scalars().all()
    assert [(e.subject, e.actor, e.detail["reason"]) for e in events] == [(serial, "admin:operator-7", "keyCompromise")]

    crl = (await client.get("/pki/crl/issuing.crl")).content
    assert f"Serial Number: {serial.upper()}" in crl_text(crl)
    issuing = x509.load_der_x509_certificate((await client.get("/pki/ca/issuing.crt")).content)
    r = await client.post("/pki/ocsp", content=ocsp_request(cert, issuing))
    assert ocsp.load_der_ocsp_response(r.content).certificate_status == ocsp.OCSPCertStatus.REVOKED

    r = await client.post(path, json={"reason": "superseded"}, headers=revoker)
    assert r.status_code == 409 and r.json()["type"] == "urn:acar:problem:already_revoked"
    admin = await _token(initialized, "acar:admin")  # the all-areas scope may revoke too
    r = await client.post(path, json=body, headers=admin)
    assert r.status_code == 409
