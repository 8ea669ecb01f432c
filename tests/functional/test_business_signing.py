"""Business signing (issue 16) end to end in process, on both databases: an agency asks a legal entity's
representative to sign (entity_voen + signer_fin), the representative signs in with an attested passkey, the page
says "on behalf of <entity> (VÖEN)", the approval and then the worker check the mandate with the power
sign_declarations in the registry, and the signature is made as the entity's configuration says: with the entity's
seal (organizationIdentifier NTRAZ-<VÖEN>, ETSI EN 319 412-3) or with the person's own certificate and a claimed role
naming the entity in signer-attributes-v2 (ETSI EN 319 122-1 section 5.2.6.1). pyHanko and pdfsig (poppler) validate
both; no mandate, an expired or revoked one or one without the power is refused at the approval (a translated page,
a problem, nothing changed); a mandate revoked between approval and signing fails the request at signing time with
mandate_invalid and nothing is signed; an entity unknown, suspended or not configured is a clear problem at creation.

The in-process worker is off (ACAR_SIGNING_INPROCESS_WORKER=false): each test runs the worker itself, so what happens
between the approval and the signature is the test's to decide.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from asn1crypto import x509
from fastapi import FastAPI
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from sqlalchemy import func, select

from api.deps import Services
from api.settings import Settings
from idp.sql.registry import EntityService, MandateService
from signing.core.interfaces import EntityForm
from signing.sql.entities import configure_entity
from signing.sql.models import SigningCallback, SigningDocument, SigningJob, SigningRequest
from storage.audit import AuditEvent
from tests.approval_tools import text_pdf
from tests.functional.helpers import InProcessAcar
from tests.functional.test_signing_approval import _sign_in, _signer
from tests.local_http import free_port, serving
from tests.oidc_tools import asgi_browser
from tests.pades_world import _pki_handler
from tests.passkey_tools import ORIGIN
from tests.replay import Replays
from tests.signing_tools import Agency, prepared, register_agency, verify_signed
from tests.unit.idp.test_webauthn import MODEL, require_attestation
from tests.webauthn_authenticator import CSRF, AttestationCa, SoftwareAuthenticator

API = "/api/v1/signing-requests"
FIN = "5ABCD12"
VOEN = "1400057421"
ENTITY = "Xəzər Logistika MMC"


@pytest.fixture(scope="module")
def pki_port() -> int:
    """The loopback port of the PKI's URLs, one for the module (tests.pades_world gives each test its own): every
    certificate names it, so the PKI is then the same in each test and its rows are replayed (tests/replay.py)."""
    return free_port()


@pytest.fixture
def settings(settings: Settings, pki_port: int) -> Settings:
    settings.signing_inprocess_worker = False  # the tests run the worker themselves
    settings.pki_base_url = f"http://127.0.0.1:{pki_port}"  # OCSP and CRLs for pdfsig, served while it runs
    return settings


@pytest.fixture(scope="module")
def vendor() -> AttestationCa:
    """The authenticators' vendor, trusted for MODEL: one for the module, so a replayed passkey's attestation
    chains to the root this test trusts."""
    return AttestationCa()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _entity(services: Services, *, form: EntityForm | None, status: str = "active") -> None:
    async with services.sessions() as session, session.begin():
        await EntityService(session).add(voen=VOEN, name=ENTITY, legal_form="MMC", status="active", actor="test")
        if form is not None:
            await configure_entity(session, ca=services.pki.ca, store=services.key_store, voen=VOEN, form=form,
                                   organization=ENTITY, actor="test")
        if status != "active":
            await EntityService(session).set_status(VOEN, status, actor="test")


async def _mandate(services: Services, *, powers: tuple[str, ...] = ("sign_declarations",),
                   valid_from: dt.datetime | None = None, valid_to: dt.datetime | None = None) -> str:
    async with services.sessions() as session, session.begin():
        granted = await MandateService(session).grant(fin=FIN, voen=VOEN, powers=powers, valid_from=valid_from,
                                                      valid_to=valid_to, granted_by="officer", granted_via="officer",
                                                      actor="test")
    return granted.id


async def _revoke(services: Services, mandate_id: str) -> None:
    async with services.sessions() as session, session.begin():
        await MandateService(session).revoke(mandate_id, actor="test")


async def _world(services: Services, app: FastAPI, client: httpx.AsyncClient, vendor: AttestationCa,
                 tmp_path: Path, *, replays: Replays) -> tuple[x509.Certificate, Agency, SoftwareAuthenticator]:
    """The PKI, an agency, and the representative with an attested passkey; the PKI's and the passkey's rows are
    made the first time and replayed after that (tests/replay.py)."""
    root = await prepared(services, replays)
    require_attestation(services, vendor, tmp_path, [MODEL])
    agency = await register_agency(services, client, seal=False)
    signer = await replays.run(services, "business signing: representative enrolled",
                               lambda: _signer(services, app, vendor, FIN))
    return root, agency, signer


async def _create(client: httpx.AsyncClient, agency: Agency, pdf: bytes, **extra: Any) -> dict[str, Any]:
    r = await client.post(API, headers=agency.headers, json={
        "mode": "sign", "signer_fin": FIN, "entity_voen": VOEN, "reason": "ƏDV bəyannaməsi",
        "documents": [{"filename": "edv.pdf", "content": _b64(pdf)}], **extra})
    assert r.status_code == 201, r.text
    assert r.json()["entity_voen"] == VOEN
    return dict(r.json())


async def _approve(services: Services, app: FastAPI, url: str, signer: SoftwareAuthenticator,
                   language: str = "en") -> tuple[httpx.Response, httpx.Response]:
    """The page (signed in) and the approval's answer."""
    request_id = url.rsplit("/", 1)[1]
    async with asgi_browser(app) as browser:
        browser.headers["Accept-Language"] = language
        page = await _sign_in(services, browser, url, signer)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if csrf is None:  # a refusal page: nothing to approve on it
            return page, httpx.Response(599)
        headers = {CSRF: csrf.group(1), "Origin": ORIGIN}
        r = await browser.post(f"/sign/{request_id}/options", json={}, headers=headers)
        assert r.status_code == 200, r.text
        begun = r.json()
        approved = await browser.post(f"/sign/{request_id}/approve", headers=headers, json={
            "ceremony": begun["ceremony"], "credential": signer.get(begun["publicKey"])})
    return page, approved


async def _work(services: Services) -> None:
    while await services.signing.worker.work_once():
        pass


async def _row(services: Services, request_id: str) -> SigningRequest:
    async with services.sessions() as session:
        row = await session.get(SigningRequest, request_id)
        assert row is not None
        return row


async def _events(services: Services, event_type: str, subject: str) -> list[dict[str, Any]]:
    """The details of the audit events of a type about a subject, oldest first (a table has no order of its own)."""
    async with services.sessions() as session:
        rows = (await session.execute(select(AuditEvent).where(
            AuditEvent.event_type == event_type, AuditEvent.subject == subject)
            .order_by(AuditEvent.occurred_at))).scalars().all()
    return [dict(row.detail or {}) for row in rows]


async def _pdfsig(services: Services, pdf: bytes, directory: Path, port: int) -> str:
    """pdfsig's verdict, with an NSS database trusting only the test root, the PKI's OCSP responder and CRLs served
    on loopback (tests.pades_world) while it runs: the signature and the signer's certificate must be valid."""
    nss = directory / "nss"
    if not nss.exists():
        nss.mkdir()
        async with services.sessions() as session:
            (directory / "root.der").write_bytes((await services.pki.ca.ca_row(session, "root")).certificate_der)
            (directory / "issuing.der").write_bytes(
                (await services.pki.ca.ca_row(session, "issuing")).certificate_der)
        for args in (["certutil", "-N", "-d", f"sql:{nss}", "--empty-password"],
                     ["certutil", "-A", "-d", f"sql:{nss}", "-n", "acar-test-root", "-t", "CT,C,C", "-i",
                      str(directory / "root.der")],
                     ["certutil", "-A", "-d", f"sql:{nss}", "-n", "acar-test-issuing", "-t", ",,", "-i",
                      str(directory / "issuing.der")]):
            await asyncio.to_thread(subprocess.run, args, check=True, capture_output=True, timeout=60)
    path = directory / "signed.pdf"
    path.write_bytes(pdf)
    with serving(_pki_handler(services, asyncio.get_running_loop(), []), port):
        done = await asyncio.to_thread(subprocess.run, ["pdfsig", "-nssdir", f"sql:{nss}", str(path)],
                                       capture_output=True, text=True, check=False, timeout=60)
    report = done.stdout + done.stderr
    assert "Signature Validation: Signature is Valid." in report, report
    assert "Certificate Validation: Certificate is Trusted." in report, report
    return report


async def _signed(client: httpx.AsyncClient, agency: Agency, request_id: str) -> bytes:
    r = await client.get(f"{API}/{request_id}", headers=agency.headers)
    assert r.json()["state"] == "completed", r.text
    r = await client.get(f"{API}/{request_id}/documents/1", headers=agency.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    return r.content


async def test_seal_form_signs_with_the_entity_seal(initialized: Services, app: FastAPI, client: httpx.AsyncClient, *,
                                                     vendor: AttestationCa, tmp_path: Path, pki_port: int,
                                                     replays: Replays) -> None:
    root, agency, signer = await _world(initialized, app, client, vendor, tmp_path, replays=replays)
    await _entity(initialized, form=EntityForm.SEAL)
    mandate_id = await _mandate(initialized)
    pdf = text_pdf("Bəyannamə")
    created = await _create(client, agency, pdf)
    page, approved = await _approve(initialized, app, created["approval_url"], signer)
    assert page.status_code == 200, page.text
    assert f"on behalf of {ENTITY} (VÖEN {VOEN})" in page.text
    assert approved.status_code == 200, approved.text
    row = await _row(initialized, created["id"])
    assert (row.state, row.entity_form, row.mandate_id) == ("approved", "seal", mandate_id)
    [event] = await _events(initialized, "signing.request.approved", created["id"])
    assert event["representation"]["mandate_id"] == mandate_id and event["representation"]["voen"] == VOEN
    assert event["representation"]["fin"] == FIN and event["form"] == "seal"

    await _work(initialized)
    signed = await _signed(client, agency, created["id"])
    assert signed.startswith(pdf)
    [subject] = await verify_signed(signed, root)
    assert f"NTRAZ-{VOEN}" in subject and ENTITY in subject, subject
    report = await _pdfsig(initialized, signed, tmp_path, pki_port)
    assert f"NTRAZ-{VOEN}" in report or ENTITY in report, report
    [signed_event] = await _events(initialized, "signing.document.signed", created["id"])
    assert signed_event["representation"]["mandate_id"] == mandate_id
    assert signed_event["representation"]["person_id"] and signed_event["form"] == "seal"


async def test_person_form_claims_the_role_in_signer_attributes(initialized: Services, app: FastAPI,
                                                                client: httpx.AsyncClient, *, vendor: AttestationCa,
                                                                tmp_path: Path, pki_port: int,
                                                                replays: Replays) -> None:
    root, agency, signer = await _world(initialized, app, client, vendor, tmp_path, replays=replays)
    await _entity(initialized, form=EntityForm.PERSON)
    mandate_id = await _mandate(initialized)
    created = await _create(client, agency, text_pdf("Hesabat"))
    page, approved = await _approve(initialized, app, created["approval_url"], signer, language="ru")
    assert f"от имени {ENTITY} (VÖEN {VOEN})" in page.text
    assert approved.status_code == 200, approved.text
    await _work(initialized)
    signed = await _signed(client, agency, created["id"])
    [subject] = await verify_signed(signed, root)
    assert f"PNOAZ-{FIN}" in subject, subject

    # pyHanko reads the claimed role (signer-attributes-v2) and it names the entity by its VÖEN
    [signature] = PdfFileReader(io.BytesIO(signed)).embedded_signatures
    status = await async_validate_pdf_signature(signature, ValidationContext(
        trust_roots=[root], allow_fetching=False, revocation_mode="soft-fail"))
    assert status.valid and status.intact and status.trusted
    assert status.cades_signer_attrs is not None
    role = status.cades_signer_attrs.claimed_attrs["role"]
    [value] = list(role.attr_values)
    named = value["role_name"].chosen
    assert isinstance(named, x509.Name)
    assert named.native["organization_identifier"] == f"NTRAZ-{VOEN}"
    assert named.native["organization_name"] == ENTITY and named.native["title"] == "Representative"
    await _pdfsig(initialized, signed, tmp_path, pki_port)
    [event] = await _events(initialized, "signing.document.signed", created["id"])
    assert event["representation"]["mandate_id"] == mandate_id and event["form"] == "person"


NOW = dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(("case", "reason", "text"), [
    ("none", "no_mandate", "you hold no mandate for it"),
    ("expired", "expired", "your mandate has expired"),
    ("revoked", "revoked", "your mandate was revoked"),
    ("no_power", "no_power", "your mandate does not include signing declarations"),
])
async def test_refused_at_approval(initialized: Services, app: FastAPI, client: httpx.AsyncClient, *,
                                   vendor: AttestationCa, tmp_path: Path, replays: Replays, case: str, reason: str,
                                   text: str) -> None:
    _, agency, signer = await _world(initialized, app, client, vendor, tmp_path, replays=replays)
    await _entity(initialized, form=EntityForm.PERSON)
    if case == "expired":
        await _mandate(initialized, valid_from=NOW - dt.timedelta(days=30), valid_to=NOW - dt.timedelta(days=1))
    elif case == "revoked":
        await _revoke(initialized, await _mandate(initialized))
    elif case == "no_power":
        await _mandate(initialized, powers=("represent_at_login",))
    created = await _create(client, agency, text_pdf("Rədd"))
    for language, phrase in (("en", text), ("az", "Bu hüquqi şəxsin adından"), ("ru", "от имени этого")):
        page, _ = await _approve(initialized, app, created["approval_url"], signer, language=language)
        assert page.status_code == 403, page.text
        assert phrase in page.text, (language, page.text)
    row = await _row(initialized, created["id"])
    assert (row.state, row.key_id, row.mandate_id) == ("pending", None, None)
    async with initialized.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(SigningJob))).scalar_one() == 0
    from api.mandates import RegistryMandates

    check = await RegistryMandates(initialized.sessions).check(FIN, VOEN, at=dt.datetime.now(dt.UTC))
    assert check.refusal == reason and not check.valid


async def test_approve_call_is_refused_without_mandate(initialized: Services, app: FastAPI,
                                                        client: httpx.AsyncClient, vendor: AttestationCa,
                                                        tmp_path: Path, *, replays: Replays) -> None:
    """The page was opened while the mandate held; revoked before the passkey answer: 403 mandate_invalid."""
    _, agency, signer = await _world(initialized, app, client, vendor, tmp_path, replays=replays)
    await _entity(initialized, form=EntityForm.SEAL)
    mandate_id = await _mandate(initialized)
    created = await _create(client, agency, text_pdf("Gec"))
    request_id = created["id"]
    async with asgi_browser(app) as browser:
        page = await _sign_in(initialized, browser, created["approval_url"], signer)
        assert page.status_code == 200
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        headers = {CSRF: csrf, "Origin": ORIGIN}
        begun = (await browser.post(f"/sign/{request_id}/options", json={}, headers=headers)).json()
        await _revoke(initialized, mandate_id)
        r = await browser.post(f"/sign/{request_id}/approve", headers=headers, json={
            "ceremony": begun["ceremony"], "credential": signer.get(begun["publicKey"])})
    assert r.status_code == 403 and r.json()["code"] == "mandate_invalid", r.text
    assert "revoked" in r.json()["detail"]
    row = await _row(initialized, request_id)
    assert (row.state, row.key_id) == ("pending", None)


async def test_revoked_between_approval_and_signing_fails_and_signs_nothing(
        initialized: Services, app: FastAPI, client: httpx.AsyncClient, vendor: AttestationCa,
        tmp_path: Path, *, replays: Replays) -> None:
    _, agency, signer = await _world(initialized, app, client, vendor, tmp_path, replays=replays)
    await _entity(initialized, form=EntityForm.PERSON)
    mandate_id = await _mandate(initialized)
    created = await _create(client, agency, text_pdf("Vaxt"), callback_url="https://agency.example/done")
    _, approved = await _approve(initialized, app, created["approval_url"], signer)
    assert approved.status_code == 200, approved.text
    await _revoke(initialized, mandate_id)
    await _work(initialized)
    r = await client.get(f"{API}/{created['id']}", headers=agency.headers)
    body = r.json()
    assert body["state"] == "failed" and body["failure"]["code"] == "mandate_invalid", body
    assert "revoked" in body["failure"]["detail"]
    async with initialized.sessions() as session:
        document = await session.get(SigningDocument, (created["id"], 1))
        assert document is not None and document.signed is None and document.state == "failed"
        [callback] = (await session.execute(select(SigningCallback).where(
            SigningCallback.request_id == created["id"]))).scalars().all()
    assert callback.claims["failure"]["code"] == "mandate_invalid", callback.claims
    assert await _events(initialized, "signing.document.signed", created["id"]) == []
    [failed] = await _events(initialized, "signing.request.failed", created["id"])
    assert failed["code"] == "mandate_invalid"
    assert failed["representation"]["fin"] == FIN and failed["representation"]["voen"] == VOEN
    assert failed["representation"]["refusal"] == "revoked" and failed["representation"]["person_id"]


@pytest.mark.parametrize(("setup", "voen", "status", "code"), [
    ("none", "12345", 422, "invalid_voen"),
    ("none", "1234567890", 422, "invalid_voen"),  # the tenth digit is 1 or 2
    ("none", VOEN, 422, "entity_not_registered"),
    ("suspended", VOEN, 409, "entity_inactive"),
    ("unconfigured", VOEN, 409, "entity_not_configured"),
])
async def test_request_problems(initialized: Services, client: httpx.AsyncClient, *, replays: Replays, setup: str,
                                voen: str, status: int, code: str) -> None:
    await prepared(initialized, replays)
    agency = await register_agency(initialized, client, seal=False)
    if setup == "suspended":
        await _entity(initialized, form=EntityForm.PERSON, status="suspended")
    elif setup == "unconfigured":
        await _entity(initialized, form=None)
    r = await client.post(API, headers=agency.headers, json={
        "mode": "sign", "signer_fin": FIN, "entity_voen": voen,
        "documents": [{"filename": "a.pdf", "content": _b64(text_pdf("X"))}]})
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code, r.text
    # seal mode names no entity
    r = await client.post(API, headers=agency.headers, json={
        "mode": "seal", "entity_voen": VOEN, "documents": [{"filename": "a.pdf", "content": _b64(text_pdf("X"))}]})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text
    async with initialized.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(SigningRequest))).scalar_one() == 0


async def test_cli_configures_an_entity(initialized: Services, replays: Replays, acar: InProcessAcar) -> None:
    """`acar entity-signing set`: seal form makes the seal key and a legal-person-seal certificate naming the entity
    (NTRAZ-<VÖEN>), kept when set again; person form drops it; an unknown or suspended entity is a one-line error."""
    await prepared(initialized, replays)
    refused = acar("entity-signing", "set", VOEN, "--form", "seal", check=False)
    assert refused.returncode == 1 and f"no legal entity with VÖEN {VOEN}" in refused.stderr
    await _entity(initialized, form=None)
    first = acar.json("entity-signing", "set", VOEN, "--form", "seal")
    assert first["form"] == "seal" and first["organization"] == ENTITY and first["new_key"] is True
    again = acar.json("entity-signing", "set", VOEN, "--form", "seal")
    assert (again["key_id"], again["new_key"]) == (first["key_id"], False)
    async with initialized.sessions() as session:
        certificate = x509.Certificate.load((await initialized.pki.ca.certified_key_of(
            session, key_id=first["key_id"])).certificate.dump())
    assert certificate.subject.native["organization_identifier"] == f"NTRAZ-{VOEN}"
    person = acar.json("entity-signing", "set", VOEN, "--form", "person")
    assert (person["form"], person["key_id"]) == ("person", None)
    assert acar.json("entity-signing", "show", VOEN)["form"] == "person"
    assert [e["form"] for e in await _events(initialized, "signing.entity.configured", VOEN)] == \
        ["seal", "seal", "person"]
    async with initialized.sessions() as session, session.begin():
        await EntityService(session).set_status(VOEN, "suspended", actor="test")
    refused = acar("entity-signing", "set", VOEN, "--form", "seal", check=False)
    assert refused.returncode == 1 and "is suspended" in refused.stderr
    bad = acar("entity-signing", "show", "12345", check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1


async def test_registry_check_names_each_reason(initialized: Services) -> None:
    """api.mandates.RegistryMandates on the registry's tables: the valid mandate with the power, else the reason."""
    from api.mandates import RegistryMandates
    from idp.sql.persons import PersonService
    from tests.oidc_tools import register_person

    registry = RegistryMandates(initialized.sessions)
    now = dt.datetime.now(dt.UTC)
    assert await registry.entity(VOEN) is None
    await register_person(initialized, FIN)
    await _entity(initialized, form=None)
    entity = await registry.entity(VOEN)
    assert entity is not None and entity.active and entity.name == ENTITY
    assert (await registry.check(FIN, VOEN, at=now)).refusal == "no_mandate"
    assert (await registry.check("9ZZZZZ9", VOEN, at=now)).refusal == "no_mandate"  # no such person
    later = await _mandate(initialized, valid_from=now + dt.timedelta(days=2))
    assert (await registry.check(FIN, VOEN, at=now)).refusal == "not_yet_valid"
    assert (await registry.check(FIN, VOEN, at=now + dt.timedelta(days=3))).mandate_id == later
    current = await _mandate(initialized)
    check = await registry.check(FIN, VOEN, at=now + dt.timedelta(seconds=1))
    assert check.valid and check.mandate_id == current and check.entity_name == ENTITY and check.person_id
    async with initialized.sessions() as session, session.begin():
        await PersonService(session).set_status(FIN, "suspended", actor="test")
    assert (await registry.check(FIN, VOEN, at=now + dt.timedelta(seconds=1))).refusal == "person_inactive"
    async with initialized.sessions() as session, session.begin():
        await PersonService(session).set_status(FIN, "active", actor="test")
        await EntityService(session).set_status(VOEN, "suspended", actor="test")
    assert (await registry.check(FIN, VOEN, at=now + dt.timedelta(seconds=1))).refusal == "entity_inactive"
