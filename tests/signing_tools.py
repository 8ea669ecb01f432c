"""Helpers of the signing tests: small real PDFs, an agency client with a seal and its token, the signature check."""

from __future__ import annotations

import io
from dataclasses import dataclass

import httpx
from asn1crypto import x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from api.deps import Services
from idp.sql.clients import ClientRegistration, ClientRegistry
from signing.sql.seals import assign_seal
from tests.pki_tools import initialize_pki
from tests.replay import Replays

VOEN = "1234567891"
ORGANIZATION = "Vergilər Nazirliyi"


def minimal_pdf(pages: int = 1, text: str = "Salam, dünya") -> bytes:
    """A valid PDF 1.7 of `pages` pages with a line of text each (Helvetica), its xref table computed."""
    safe = text.encode("latin-1", "replace").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    objects: list[bytes] = []
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    font = 3 + 2 * pages
    for i in range(pages):
        stream = b"BT /F1 18 Tf 72 720 Td (" + safe + f" {i + 1}".encode() + b") Tj ET"
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
                       f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode())
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


@dataclass
class Agency:
    client_id: str
    secret: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def agency_token(http: httpx.AsyncClient, client_id: str, secret: str, scope: str | None = None) -> str:
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    r = await http.post("/token", data=data, auth=(client_id, secret))
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


async def register_agency(services: Services, http: httpx.AsyncClient, *, name: str = "Tax system",
                          scopes: tuple[str, ...] = ("signing",), seal: bool = True) -> Agency:
    """A client_credentials client with the given scopes, its token, and (seal) its seal registered."""
    async with services.sessions() as session, session.begin():
        client, secret = await ClientRegistry(session).add(ClientRegistration(
            name=name, redirect_uris=[], grant_types=["client_credentials"], scopes=list(scopes)), actor="test")
    services.clients.invalidate()
    assert secret is not None
    if seal:
        async with services.sessions() as session, session.begin():
            await assign_seal(session, ca=services.pki.ca, store=services.key_store, client_id=client.client_id,
                              voen=VOEN, organization=ORGANIZATION, actor="test")
    return Agency(client.client_id, secret, await agency_token(http, client.client_id, secret))


async def root_certificate(services: Services) -> x509.Certificate:
    async with services.sessions() as session:
        return x509.Certificate.load((await services.pki.ca.ca_row(session, "root")).certificate_der)


async def prepared(services: Services, replays: Replays | None = None) -> x509.Certificate:
    """The PKI of `acar init` (root, issuing CA, OCSP and TSA certificates; with `replays`, copied rows after the
    first time, see tests/replay.py), and the group commit the built-in TSA's audit events go through (the app's
    lifespan starts it; it is started once); the root."""
    await services.audit_log.start()
    await initialize_pki(services, replays)
    return await root_certificate(services)


async def verify_signed(signed: bytes, root: x509.Certificate) -> list[str]:
    """Validate every signature of `signed` with pyHanko's validator trusting only `root` (no fetching: the test
    PKI's URLs are not served here); the signers' subjects."""
    reader = PdfFileReader(io.BytesIO(signed))
    assert reader.embedded_signatures, "no signature in the document"
    subjects = []
    for signature in reader.embedded_signatures:
        context = ValidationContext(trust_roots=[root], allow_fetching=False, revocation_mode="soft-fail")
        status = await async_validate_pdf_signature(signature, context)
        assert status.intact and status.valid and status.trusted, status.pretty_print_details()
        assert status.coverage is not None and status.coverage.name in ("ENTIRE_FILE", "ENTIRE_REVISION")
        subjects.append(signature.signer_cert.subject.human_friendly)
    return subjects
