"""The OCSP responder (RFC 6960): requests built and responses read by `cryptography`, never by our own code."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping, Sequence

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from api.deps import Services
from keys.ca import ISSUING
from keys.interfaces import CertificateStatus
from keys.ocsp import OcspResponder
from keys.pki import PkiService
from keys.profiles import Profile
from tests.pki_tools import (
    MALFORMED_REQUEST,
    UNAUTHORIZED,
    foreign_ca,
    foreign_leaf,
    initialize_pki,
    issue_x509,
    ocsp_request,
)


async def _issuing(pki: PkiService) -> x509.Certificate:
    return x509.load_der_x509_certificate(await pki.ca_certificate(ISSUING))


def _check_signed(der: bytes, responder: x509.Certificate) -> ocsp.OCSPResponse:
    """Parse with `cryptography` and verify the signature with the responder certificate it carries."""
    response = ocsp.load_der_ocsp_response(der)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert [c.public_bytes(serialization.Encoding.DER) for c in response.certificates] == [
        responder.public_bytes(serialization.Encoding.DER)]
    public = responder.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    key_bits = responder.public_key().public_bytes(serialization.Encoding.X962,
                                                   serialization.PublicFormat.UncompressedPoint)
    assert response.responder_key_hash == hashlib.sha1(key_bits).digest()  # noqa: S324 - RFC 6960 KeyHash
    assert response.responder_name is None
    return response


async def _responder_cert(pki: PkiService) -> x509.Certificate:
    return x509.load_der_x509_certificate((await pki.certified_key(Profile.OCSP_RESPONDER)).certificate.dump())


@pytest.fixture
async def pki(services: Services) -> PkiService:
    return await initialize_pki(services)


async def _issue(services: Services) -> x509.Certificate:
    return await issue_x509(services, Profile.AUTHENTICATION)


async def test_good_then_revoked_with_nonce(services: Services, pki: PkiService) -> None:
    cert = await _issue(services)
    issuing = await _issuing(pki)
    responder = await _responder_cert(pki)
    nonce = secrets.token_bytes(16)
    reply = await pki.ocsp(ocsp_request(cert, issuing, nonce=nonce))
    response = _check_signed(reply.der, responder)
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == cert.serial_number
    assert response.hash_algorithm.name == "sha1"
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    now = dt.datetime.now(dt.UTC)
    assert abs(response.this_update_utc - now) < dt.timedelta(seconds=5)
    assert response.next_update_utc - response.this_update_utc == pki.ocsp_validity
    assert abs(response.produced_at_utc - now) < dt.timedelta(seconds=5)

    async with services.sessions() as session, session.begin():
        await pki.revoke(session, format(cert.serial_number, "x"), "keyCompromise", actor="test")
    response = _check_signed((await pki.ocsp(ocsp_request(cert, issuing))).der, responder)
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason == x509.ReasonFlags.key_compromise
    assert response.revocation_time_utc is not None and abs(response.revocation_time_utc - now) < dt.timedelta(
        seconds=5)
    with pytest.raises(x509.ExtensionNotFound):
        response.extensions.get_extension_for_class(x509.OCSPNonce)  # no nonce asked, none given


async def test_unspecified_reason_is_left_out(services: Services, pki: PkiService) -> None:
    cert = await _issue(services)
    async with services.sessions() as session, session.begin():
        await pki.revoke(session, format(cert.serial_number, "x"), "unspecified", actor="test")
    response = _check_signed((await pki.ocsp(ocsp_request(cert, await _issuing(pki)))).der, await _responder_cert(pki))
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED and response.revocation_reason is None


async def test_sha256_cert_ids_are_recognised(services: Services, pki: PkiService) -> None:
    cert = await _issue(services)
    der = (await pki.ocsp(ocsp_request(cert, await _issuing(pki), algorithm=hashes.SHA256()))).der
    response = _check_signed(der, await _responder_cert(pki))
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD and response.hash_algorithm.name == "sha256"


async def test_unknown_serial_and_other_issuer_are_unknown(services: Services, pki: PkiService) -> None:
    issuing = await _issuing(pki)
    mine = await _issue(services)
    responder = await _responder_cert(pki)
    # a serial our issuing CA never used, asked about under our issuer's hashes
    ghost = foreign_leaf(issuing, ec.generate_private_key(ec.SECP256R1()), x509.random_serial_number())
    response = _check_signed((await pki.ocsp(ocsp_request(ghost, issuing))).der, responder)
    assert response.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    # another CA's certificate with the very serial of one of ours: another issuer, so unknown
    other_ca, other_key = foreign_ca()
    twin = foreign_leaf(other_ca, other_key, mine.serial_number)
    response = _check_signed((await pki.ocsp(ocsp_request(twin, other_ca))).der, responder)
    assert response.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


async def test_several_requests_in_one(services: Services, pki: PkiService) -> None:
    issuing = await _issuing(pki)
    good, revoked = await _issue(services), await _issue(services)
    async with services.sessions() as session, session.begin():
        await pki.revoke(session, format(revoked.serial_number, "x"), "superseded", actor="test")
    singles = [asn1_ocsp.OCSPRequest.load(ocsp_request(c, issuing))["tbs_request"]["request_list"][0]
               for c in (good, revoked, foreign_leaf(issuing, ec.generate_private_key(ec.SECP256R1()), 12345))]
    request = asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": singles}}).dump()
    reply = await pki.ocsp(request)
    assert reply.cert_statuses == ("good", "revoked", "unknown")
    parsed = asn1_ocsp.OCSPResponse.load(reply.der)  # cryptography reads one SingleResponse only
    responses = parsed["response_bytes"]["response"].parsed["tbs_response_data"]["responses"]
    assert [r["cert_status"].name for r in responses] == ["good", "revoked", "unknown"]
    assert [r["cert_id"].dump() for r in responses] == [s["req_cert"].dump() for s in singles]
    assert responses[1]["cert_status"].chosen["revocation_reason"].native == "superseded"
    # RFC 6960 4.4.4 archiveCutoff on the answers about our certificates (status kept since the CA began)
    cutoff = (await _issuing(pki)).not_valid_before_utc
    assert [r.archive_cutoff_value.native if r.archive_cutoff_value else None for r in responses] == [
        cutoff, cutoff, None]
    archive = x509.ObjectIdentifier("1.3.6.1.5.5.7.48.1.6")
    assert not any(e["critical"].native for r in responses[:2] for e in r["single_extensions"]
                   if e["extn_id"].dotted == archive.dotted_string)


def _request_with(**changes: object) -> bytes:
    """A valid-looking request changed in one place (built with asn1crypto from a cryptography request)."""
    cert, key = foreign_ca()
    base = asn1_ocsp.OCSPRequest.load(ocsp_request(foreign_leaf(cert, key, 7), cert))
    tbs = base["tbs_request"]
    singles = list(tbs["request_list"])
    body: dict[str, object] = {"request_list": singles}
    for name, value in changes.items():
        if name == "count":
            body["request_list"] = singles * int(str(value))
        elif name == "nonce":
            body["request_extensions"] = [{"extn_id": "nonce", "extn_value": value}]
        elif name == "critical":
            body["request_extensions"] = [{"extn_id": "1.2.3.4", "critical": True, "extn_value": b"\x05\x00"}]
        elif name == "version":
            body["version"] = value
    return bytes(asn1_ocsp.OCSPRequest({"tbs_request": body}).dump())


def _valid_request() -> bytes:
    cert, key = foreign_ca()
    return ocsp_request(foreign_leaf(cert, key, 7), cert)


@pytest.mark.parametrize("body", [
    pytest.param(b"", id="empty"),
    pytest.param(b"garbage", id="garbage"),
    pytest.param(b"\x30\x82\xff\xff" + b"\x00" * 10, id="length-beyond-the-data"),
    pytest.param(_valid_request()[:-3], id="truncated"),
    pytest.param(_valid_request() + b"\x00", id="trailing-byte"),
    pytest.param(b"\x30\x00", id="empty-sequence"),
    pytest.param(b"\x30" + b"\x80" * 1000, id="indefinite-nonsense"),
    pytest.param(b"\x30\x80" + b"\x30\x80" * 5000, id="deep-nesting"),
    pytest.param(_request_with(count=0), id="no-single-request"),
    pytest.param(_request_with(count=21), id="too-many-single-requests"),
    pytest.param(_request_with(nonce=b""), id="empty-nonce"),
    pytest.param(_request_with(nonce=b"n" * 33), id="nonce-over-32-octets"),
    pytest.param(_request_with(critical=True), id="unknown-critical-extension"),
    pytest.param(_request_with(version=1), id="version-2"),
    pytest.param(b"\x30" * 20000, id="oversized"),
])
async def test_malformed_requests(services: Services, pki: PkiService, body: bytes) -> None:
    assert (await pki.ocsp(body)).der == MALFORMED_REQUEST


async def test_the_malformed_cases_differ_from_a_good_request_in_one_place(pki: PkiService) -> None:
    for body in (_request_with(), _request_with(count=20), _request_with(nonce=b"n" * 32)):
        assert (await pki.ocsp(body)).cert_statuses[0] == "unknown"  # the unchanged parts are well-formed


async def test_without_a_ca_the_answer_is_unauthorized(services: Services) -> None:
    cert, key = foreign_ca()
    reply = await services.pki.ocsp(ocsp_request(foreign_leaf(cert, key, 7), cert))
    assert reply.der == UNAUTHORIZED
    assert ocsp.load_der_ocsp_response(reply.der).response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


class _FailingSource:
    async def lookup(self, issuer: str, serials: Sequence[str]) -> Mapping[str, CertificateStatus]:
        raise ConnectionError("database gone")

    async def close(self) -> None:
        pass


async def test_a_failing_status_lookup_is_try_later(services: Services, pki: PkiService) -> None:
    certified = await pki.certified_key(Profile.OCSP_RESPONDER)
    responder = OcspResponder(issuer_name=ISSUING, issuer_certificate=certified.chain[0],
                              responder_handle=certified.handle, responder_certificate=certified.certificate,
                              statuses=_FailingSource())
    cert = await _issue(services)
    reply = await responder.respond(ocsp_request(cert, await _issuing(pki)))
    assert ocsp.load_der_ocsp_response(reply.der).response_status == ocsp.OCSPResponseStatus.TRY_LATER


async def test_the_responder_refuses_a_certificate_that_does_not_fit(services: Services, pki: PkiService) -> None:
    from keys.errors import CANotInitialized

    certified = await pki.certified_key(Profile.OCSP_RESPONDER)
    tsa = await pki.tsa_key()
    with pytest.raises(CANotInitialized, match="does not certify key"):
        OcspResponder(issuer_name=ISSUING, issuer_certificate=certified.chain[0], responder_handle=tsa.handle,
                      responder_certificate=certified.certificate, statuses=_FailingSource())
    with pytest.raises(CANotInitialized, match="lacks id-kp-OCSPSigning"):
        OcspResponder(issuer_name=ISSUING, issuer_certificate=certified.chain[0], responder_handle=tsa.handle,
                      responder_certificate=tsa.certificate, statuses=_FailingSource())
