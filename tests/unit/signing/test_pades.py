"""The PAdES engine on a real PKI (Açar's own CA, OCSP responder and TSA on the test database), ECDSA P-256
software keys, every level checked by independent validators: pyHanko's validator for the level, poppler's
pdfsig (NSS database trusting the test root, OCSP answered on loopback), qpdf --check, openssl cms -verify over
the signed byte range and openssl ts -verify for the time-stamp tokens."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import re
import shutil
import urllib.parse
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms, ocsp, x509
from cryptography import x509 as cx509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.ades.report import AdESPassed
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.ades import ades_lta_validation
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.policy_decl import (
    PdfSignatureValidationSpec,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.ltv.types import ValidationTimingInfo
from pyhanko_certvalidator.policy_decl import (
    CertRevTrustPolicy,
    FreshnessReqType,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)
from pyhanko_certvalidator.registry import SimpleTrustManager

from api.deps import Services, SigningEngine
from api.settings import Settings
from keys.profiles import LegalPerson, NaturalPerson, Profile
from keys.x509 import serial_to_hex
from signing.core.errors import (
    AppearanceUnavailable,
    InvalidSignatureOptions,
    SignerCertificateRevoked,
    SignerCredentialsUnusable,
    TimestampUnavailable,
)
from signing.core.levels import PadesLevel
from signing.core.pades import PadesEngine, SignatureOptions, SigningCredentials, VisibleSignature
from signing.core.revocation import ValidationDataSource
from signing.core.timestamps import ServiceTimeStamper, UrlTimeStamper
from tests.local_http import QuietHandler, free_port, serving
from tests.pdf_tools import catalog_version, header_version, make_pdf, signature_parts, xmp_packet
from tests.pki_tools import PERSON, initialize_pki

SEAL = LegalPerson.create(voen="1234567891", organization="Vergilər Nazirliyi")
TOOLS = ("pdfsig", "pdffonts", "certutil", "qpdf", "openssl")
REVINFO_MAX_AGE = dt.timedelta(days=60)


# --- the PKI on loopback -----------------------------------------------------------------------------------------


@pytest.fixture
def pki_port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, pki_port: int) -> Settings:
    """The PKI URLs in every certificate (OCSP, CRL, caIssuers) point at the loopback server of `world`."""
    settings.issuer = f"http://127.0.0.1:{pki_port}"
    return settings


def _pki_handler(services: Services, loop: asyncio.AbstractEventLoop, hits: list[str]) -> type[QuietHandler]:
    """/pki/ocsp, /pki/crl/NAME.crl, /pki/ca/NAME.crt and /tsa answered by the services on the test's event loop
    (what api/routes/pki.py and tsa.py serve), for pdfsig and for the external-TSA client."""

    def run(coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)  # type: ignore[arg-type]

    class Handler(QuietHandler):
        def _reply(self, body: bytes, content_type: str, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's name
            hits.append("POST " + self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/pki/ocsp":
                self._reply(run(services.pki.ocsp(body)).der, "application/ocsp-response")
            elif self.path == "/tsa":
                self._reply(run(services.tsa.timestamp(body, actor="test-http")).der, "application/timestamp-reply")
            else:
                self._reply(b"", "text/plain", 404)

        def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's name
            hits.append("GET " + self.path)
            if self.path.startswith("/pki/ocsp/"):
                der = base64.b64decode(urllib.parse.unquote(self.path.removeprefix("/pki/ocsp/")))
                self._reply(run(services.pki.ocsp(der)).der, "application/ocsp-response")
            elif self.path.startswith("/pki/crl/"):
                name = self.path.removeprefix("/pki/crl/").removesuffix(".crl")
                self._reply(run(services.pki.crl(name)), "application/pkix-crl")
            elif self.path.startswith("/pki/ca/"):
                name = self.path.removeprefix("/pki/ca/").removesuffix(".crt")
                self._reply(run(services.pki.ca_certificate(name)), "application/pkix-cert")
            else:
                self._reply(b"", "text/plain", 404)

    return Handler


@dataclass
class World:
    services: Services
    engine: PadesEngine
    timestamper: ServiceTimeStamper
    validation: ValidationDataSource
    root: x509.Certificate
    issuing: x509.Certificate
    signer: SigningCredentials
    directory: Path
    tsa_url: str
    hits: list[str]

    async def credentials(self, profile: Profile, subject: NaturalPerson | LegalPerson,
                          days: int | None = None) -> SigningCredentials:
        """A fresh P-256 software key (keys' software store) with a certificate of the issuing CA."""
        async with self.services.sessions() as session, session.begin():
            handle = await self.services.key_store.generate(session, "EC-P256", purpose="signing", label="test")
            # pyHanko's signers (imported here) register a qcStatements spec in asn1crypto: keys.profiles must
            # issue qualified certificates all the same (it once failed with AttributeError)
            row = await self.services.pki.ca.issue(session, profile=profile, subject=subject, days=days,
                                                   public_key=handle.public_key(), actor="test")
        return SigningCredentials(handle=handle, certificate=x509.Certificate.load(row.der), chain=(self.issuing,))

    async def sign(self, pdf: bytes, level: PadesLevel, credentials: SigningCredentials | None = None,
                   engine: PadesEngine | None = None, **options: Any) -> bytes:
        out = BytesIO()
        result = await (engine or self.engine).sign(
            BytesIO(pdf), out, credentials or self.signer, SignatureOptions(level=level, **options), actor="signer")
        signed = out.getvalue()
        assert result.sha256 == hashlib.sha256(signed).hexdigest()
        assert result.level is level
        assert signed.startswith(pdf), "an incremental update keeps the input bytes"
        return signed


@pytest.fixture
async def world(services: Services, pki_port: int, tmp_path: Path) -> AsyncIterator[World]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools {missing}: install poppler-utils, libnss3-tools, qpdf, openssl (make system-deps)",
                    pytrace=False)
    await services.audit_log.start()  # the TSA's audit events are group-committed (api.app starts it)
    pki = await initialize_pki(services)
    root = x509.Certificate.load(await pki.ca_certificate("root"))
    issuing = x509.Certificate.load(await pki.ca_certificate("issuing"))
    timestamper = ServiceTimeStamper(services.tsa)
    validation = ValidationDataSource(trust_roots=[root], local=pki)
    hits: list[str] = []
    with serving(_pki_handler(services, asyncio.get_running_loop(), hits), pki_port):
        world = World(services=services, engine=PadesEngine(timestamper=timestamper, validation=validation),
                      timestamper=timestamper, validation=validation, root=root, issuing=issuing,
                      signer=None,  # type: ignore[arg-type]  # set just below
                      directory=tmp_path, tsa_url=f"http://127.0.0.1:{pki_port}/tsa", hits=hits)
        world.signer = await world.credentials(Profile.NATURAL_PERSON_SIGNING, PERSON, days=30)
        _write_pem(tmp_path / "root.pem", root)
        _write_pem(tmp_path / "issuing.pem", issuing)
        try:
            yield world
        finally:
            await validation.close()


def _write_pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(cx509.load_der_x509_certificate(certificate.dump()).public_bytes(Encoding.PEM))
    return path


# --- the independent checks --------------------------------------------------------------------------------------


async def _run(*args: str | Path, check: bool = True) -> str:
    """A tool as a subprocess without blocking the event loop (pdfsig's OCSP requests are answered on it)."""
    proc = await asyncio.create_subprocess_exec(*map(str, args), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    text = stdout.decode(errors="replace") + stderr.decode(errors="replace")
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}): {text}")
    return text


async def qpdf_check(world: World, pdf: bytes) -> None:
    path = world.directory / "check.pdf"
    path.write_bytes(pdf)
    out = await _run("qpdf", "--check", path)
    assert "No syntax or stream encoding errors found" in out, out


async def pdfsig(world: World, pdf: bytes) -> list[dict[str, str]]:
    """pdfsig's verdict per signature, with an NSS database that trusts the test root (and nothing else)."""
    nss = world.directory / "nss"
    if not nss.exists():
        nss.mkdir()
        await _run("certutil", "-N", "-d", f"sql:{nss}", "--empty-password")
        await _run("certutil", "-A", "-d", f"sql:{nss}", "-n", "acar-test-root", "-t", "CT,C,C",
                   "-i", world.directory / "root.pem")
    path = world.directory / "pdfsig.pdf"
    path.write_bytes(pdf)
    out = await _run("pdfsig", "-nssdir", f"sql:{nss}", path)
    signatures: list[dict[str, str]] = []
    for line in out.splitlines():
        if line.startswith("Signature #"):
            signatures.append({})
        elif line.strip().startswith("- ") and ":" in line and signatures:
            key, _, value = line.strip()[2:].partition(":")
            signatures[-1][key.strip()] = value.strip()
    return signatures


async def openssl_cms_verify(world: World, pdf: bytes, index: int) -> cms.SignedData:
    """openssl cms -verify of the `index`th signature's /Contents over its ByteRange, trusting only the root."""
    signed, contents = signature_parts(pdf, index)
    (world.directory / "signed.bin").write_bytes(signed)
    (world.directory / "contents.der").write_bytes(contents)
    out = await _run("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", world.directory / "contents.der",
                     "-content", world.directory / "signed.bin", "-CAfile", world.directory / "root.pem",
                     "-purpose", "any", "-out", "/dev/null")
    assert "Verification successful" in out, out
    signed_data: cms.SignedData = cms.ContentInfo.load(contents)["content"]
    return signed_data


async def openssl_ts_verify(world: World, token: cms.ContentInfo, data: bytes) -> None:
    """openssl ts -verify of an RFC 3161 token over `data`, trusting only the root."""
    (world.directory / "token.der").write_bytes(token.dump())
    (world.directory / "imprinted.bin").write_bytes(data)
    out = await _run("openssl", "ts", "-verify", "-in", world.directory / "token.der", "-token_in",
                     "-data", world.directory / "imprinted.bin", "-CAfile", world.directory / "root.pem",
                     "-untrusted", world.directory / "issuing.pem")
    assert "Verification: OK" in out, out


def signature_timestamp(signed_data: cms.SignedData) -> cms.ContentInfo | None:
    for attribute in signed_data["signer_infos"][0]["unsigned_attrs"] or ():
        if attribute["type"].native == "signature_time_stamp_token":
            token: cms.ContentInfo = attribute["values"][0]
            return token
    return None


def lta_spec(world: World) -> PdfSignatureValidationSpec:
    """pyHanko's AdES validation offline: the embedded data only (no fetching), revocation data required for
    the end-entity certificates, and for CAs whose certificates declare a source."""
    policy = CertValidationPolicySpec(
        trust_manager=SimpleTrustManager.build(trust_roots=[world.root]),
        revinfo_policy=CertRevTrustPolicy(
            RevocationCheckingPolicy(ee_certificate_rule=RevocationCheckingRule.CRL_OR_OCSP_REQUIRED,
                                     intermediate_ca_cert_rule=RevocationCheckingRule.CHECK_IF_DECLARED),
            # ETSI EN 319 102-1 5.2.5.4: the validation policy sets how old revocation data may be at validation
            # time; offline, with the clock moved weeks ahead, data up to REVINFO_MAX_AGE old is accepted
            freshness=REVINFO_MAX_AGE, freshness_req_type=FreshnessReqType.MAX_DIFF_REVOCATION_VALIDATION))
    return PdfSignatureValidationSpec(SignatureValidationSpec(
        cert_validation_policy=policy,
        revinfo_gathering_policy=RevocationInfoGatheringSpec(online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY),
    ))


async def pyhanko_validates(world: World, pdf: bytes, level: PadesLevel, index: int = 0,
                            at: dt.datetime | None = None) -> None:
    reader = PdfFileReader(BytesIO(pdf))
    signature = reader.embedded_regular_signatures[index]
    if level.archival:  # ETSI EN 319 102-1 5.6.3: the document time-stamp is the proof of existence
        now = at or dt.datetime.now(dt.UTC)
        timing = ValidationTimingInfo(validation_time=now, best_signature_time=now, point_in_time_validation=False)
        result = await ades_lta_validation(signature, lta_spec(world), timing_info=timing)
        assert result.ades_subindic == AdESPassed.OK, (result.failure_msg, result.api_status)
        assert result.api_status is not None and result.api_status.bottom_line, result.api_status
        return
    if level.long_term:  # offline from the DSS alone, revocation data required ("hard-fail"), no fetching
        context = DocumentSecurityStore.read_dss(reader).as_validation_context(
            {"trust_roots": [world.root], "allow_fetching": False, "revocation_mode": "hard-fail"})
        status = await async_validate_pdf_signature(signature, context, ts_validation_context=context)
        assert status.bottom_line, status.pretty_print_details()
        assert status.timestamp_validity is not None and status.timestamp_validity.trusted
        return
    context = ValidationContext(trust_roots=[world.root], allow_fetching=False, revocation_mode="soft-fail")
    status = await async_validate_pdf_signature(signature, context, ts_validation_context=context)
    assert status.intact and status.valid and status.trusted, status.pretty_print_details()
    assert status.signer_reported_dt is not None
    if level.timestamped:
        assert status.timestamp_validity is not None
        assert status.timestamp_validity.intact and status.timestamp_validity.valid
        assert status.timestamp_validity.trusted
    else:
        assert status.timestamp_validity is None


async def check_all(world: World, pdf: bytes, level: PadesLevel, index: int = 0) -> dict[str, str]:
    """Every independent validator on the `index`th signature of `pdf` at `level`; pdfsig's verdict returned."""
    await pyhanko_validates(world, pdf, level, index)
    await qpdf_check(world, pdf)
    signed_data = await openssl_cms_verify(world, pdf, index)
    attributes = {a["type"].native for a in signed_data["signer_infos"][0]["signed_attrs"]}
    assert {"content_type", "message_digest", "signing_certificate_v2"} <= attributes
    assert "signing_time" not in attributes  # ETSI EN 319 142-1 5.2.1: the time is /M
    token = signature_timestamp(signed_data)
    if level.timestamped:
        assert token is not None
        await openssl_ts_verify(world, token, signed_data["signer_infos"][0]["signature"].native)
    else:
        assert token is None
    asked = len([hit for hit in world.hits if hit.split()[1].startswith("/pki/ocsp")])
    verdicts = await pdfsig(world, pdf)
    assert len([hit for hit in world.hits if hit.split()[1].startswith("/pki/ocsp")]) > asked, \
        "pdfsig checked the signer's certificate with the OCSP responder on loopback"
    regular = [v for v in verdicts if v.get("Signature Type") == "ETSI.CAdES.detached"]
    verdict = regular[index]
    assert verdict["Signature Validation"] == "Signature is Valid.", verdicts
    assert verdict["Certificate Validation"] == "Certificate is Trusted.", verdicts
    return verdict


# --- every level -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", list(PadesLevel))
async def test_every_level_validates_with_independent_validators(world: World, level: PadesLevel) -> None:
    pdf = make_pdf(pages=2)
    signed = await world.sign(pdf, level, reason="Təsdiq edirəm", location="Bakı")
    await check_all(world, signed, level)
    reader = PdfFileReader(BytesIO(signed))
    sig_object = reader.embedded_regular_signatures[0].sig_object
    assert sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    assert sig_object["/Reason"] == "Təsdiq edirəm"
    has_dss = "/DSS" in reader.root
    assert has_dss is level.long_term
    doc_timestamps = [s for s in reader.embedded_signatures if s.sig_object.get("/SubFilter") == "/ETSI.RFC3161"]
    assert len(doc_timestamps) == (1 if level.archival else 0)
    if level.long_term:
        dss = reader.root["/DSS"]
        assert len(dss["/Certs"]) >= 3 and len(dss["/OCSPs"]) >= 2  # signer, TSA, CAs; signer's and TSA's status
    if level.archival:  # the document time-stamp token over its byte range, checked by openssl ts
        signed_bytes, contents = signature_parts(signed, 1)
        await openssl_ts_verify(world, cms.ContentInfo.load(contents), signed_bytes)


async def test_b_lta_validates_offline_after_the_signer_certificate_expired(world: World) -> None:
    signed = await world.sign(make_pdf(), PadesLevel.B_LTA)
    later = world.signer.certificate.not_valid_after + dt.timedelta(days=2)
    await pyhanko_validates(world, signed, PadesLevel.B_LTA, at=later)


async def test_revocation_data_is_fetched_in_process_and_after_the_signature_timestamp(world: World) -> None:
    signed = await world.sign(make_pdf(), PadesLevel.B_LT)
    assert not [hit for hit in world.hits if "/pki/" in hit], "the engine asked its own PKI over HTTP"
    reader = PdfFileReader(BytesIO(signed))
    signed_data = reader.embedded_regular_signatures[0].signed_data
    token = signature_timestamp(signed_data)
    assert token is not None
    gen_time = token["content"]["encap_content_info"]["content"].parsed["gen_time"].native
    produced = [ocsp_der.get_object().data for ocsp_der in reader.root["/DSS"]["/OCSPs"]]
    times = [ocsp.OCSPResponse.load(bytes(d)).basic_ocsp_response["tbs_response_data"]["produced_at"].native
             for d in produced]
    assert times and all(t >= gen_time.replace(microsecond=0) for t in times), (gen_time, times)


# --- documents -----------------------------------------------------------------------------------------------------


async def test_second_signature_by_another_signer_keeps_the_first_valid(world: World) -> None:
    first = await world.sign(make_pdf(), PadesLevel.B_LT)
    seal = await world.credentials(Profile.LEGAL_PERSON_SEAL, SEAL)
    second = await world.sign(first, PadesLevel.B_LT, credentials=seal)
    reader = PdfFileReader(BytesIO(second))
    names = [s.field_name for s in reader.embedded_regular_signatures]
    assert names == ["Signature1", "Signature2"]
    await pyhanko_validates(world, second, PadesLevel.B_LT, index=0)
    await check_all(world, second, PadesLevel.B_LT, index=1)
    verdicts = [v for v in await pdfsig(world, second) if v.get("Signature Type") == "ETSI.CAdES.detached"]
    assert [v["Signature Validation"] for v in verdicts] == ["Signature is Valid."] * 2
    assert "Vergilər Nazirliyi" in verdicts[1]["Signer Certificate Common Name"]


async def test_pdfa_input_keeps_its_version_and_xmp(world: World) -> None:
    pdf = make_pdf(pdfa=True, version=(1, 4))
    for level in (PadesLevel.B_T, PadesLevel.B_LTA):
        signed = await world.sign(pdf, level)
        assert header_version(signed) == "1.4"
        assert catalog_version(signed) is None  # no /Version raised to 1.7 for the ESIC extension
        assert xmp_packet(signed) == xmp_packet(pdf)
        await check_all(world, signed, level)


async def test_visible_signature_on_a_page_box(world: World) -> None:
    """The appearance names the signer (Azerbaijani letters) in an embedded font subset with a ToUnicode map, so
    a PDF/A input stays PDF/A (ISO 19005-2 6.2.11: every font embedded)."""
    pdf = make_pdf(pages=3, pdfa=True)
    signed = await world.sign(pdf, PadesLevel.B_T, visible=VisibleSignature(page=2, box=(72, 72, 272, 132)),
                              field_name="Imza")
    reader = PdfFileReader(BytesIO(signed))
    signature = reader.embedded_regular_signatures[0]
    assert signature.field_name == "Imza"
    widget = signature.sig_field
    assert [round(float(v)) for v in widget["/Rect"]] == [72, 72, 272, 132]
    assert widget["/P"].get_object() == reader.root["/Pages"]["/Kids"][1].get_object()
    (world.directory / "visible.pdf").write_bytes(signed)
    fonts = (await _run("pdffonts", world.directory / "visible.pdf")).splitlines()[2:]
    assert fonts, "the appearance draws text"
    for row in fonts:
        emb, sub, uni = row.split()[-5:-2]
        assert (emb, sub, uni) == ("yes", "yes", "yes"), row
    appearance = widget["/AP"]["/N"].get_object().data
    texts = [_text_string(_pdf_literal(m)) for m in re.findall(rb"/ActualText \(((?:\\.|[^\\)])*)\)", appearance)]
    assert texts == ["İmzalayan / Signed by: Aysel Məmmədova", texts[1]], texts
    assert texts[1].startswith("Tarix / Date: ") and texts[1].endswith(" UTC"), texts
    assert xmp_packet(signed) == xmp_packet(pdf)
    await check_all(world, signed, PadesLevel.B_T)


def _pdf_literal(escaped: bytes) -> bytes:
    """The bytes of a PDF literal string's body (ISO 32000-1 7.3.4.2: backslash escapes, octal codes)."""
    named = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}
    return re.sub(rb"\\([0-7]{1,3}|.)", lambda m: bytes([int(m[1], 8)]) if m[1][:1].isdigit()
                  else named.get(m[1], m[1]), escaped)


def _text_string(raw: bytes) -> str:
    """A PDF text string (ISO 32000-1 7.9.2.2): UTF-16BE after its byte order mark, else PDFDocEncoding (ASCII)."""
    return raw[2:].decode("utf-16-be") if raw.startswith(b"\xfe\xff") else raw.decode("ascii")


async def test_visible_signature_without_its_font_is_refused(world: World) -> None:
    engine = PadesEngine(timestamper=None, validation=None, appearance_font=world.directory / "missing.ttf")
    out = BytesIO()
    with pytest.raises(AppearanceUnavailable):
        await engine.sign(BytesIO(make_pdf()), out, world.signer,
                          SignatureOptions(level=PadesLevel.B_B, visible=VisibleSignature(page=1, box=(0, 0, 99, 30))),
                          actor="signer")
    assert out.getvalue() == b""


async def test_bad_options_are_refused_and_nothing_is_written(world: World) -> None:
    pdf = make_pdf(pages=1)
    signed = await world.sign(pdf, PadesLevel.B_B)
    for options in (SignatureOptions(level=PadesLevel.B_B, visible=VisibleSignature(page=2, box=(0, 0, 10, 10))),
                    SignatureOptions(level=PadesLevel.B_B, visible=VisibleSignature(page=1, box=(10, 10, 5, 20))),
                    SignatureOptions(level=PadesLevel.B_B, field_name="Signature1"),
                    SignatureOptions(level=PadesLevel.B_B, field_name="a.b")):
        out = BytesIO()
        with pytest.raises(InvalidSignatureOptions):
            await world.engine.sign(BytesIO(signed), out, world.signer, options, actor="signer")
        assert out.getvalue() == b""


async def test_expired_signer_certificate_is_refused(world: World) -> None:
    engine = PadesEngine(timestamper=world.timestamper, validation=world.validation,
                         clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=60))
    out = BytesIO()
    with pytest.raises(SignerCredentialsUnusable):
        await engine.sign(BytesIO(make_pdf()), out, world.signer, SignatureOptions(level=PadesLevel.B_B), actor="x")
    assert out.getvalue() == b""


# --- time-stamp authorities ----------------------------------------------------------------------------------------


async def test_external_tsa_url_makes_b_t(world: World) -> None:
    timestamper = UrlTimeStamper(world.tsa_url)
    engine = PadesEngine(timestamper=timestamper, validation=world.validation)
    try:
        for _ in range(2):  # one client reused
            signed = await world.sign(make_pdf(), PadesLevel.B_T, engine=engine)
            await check_all(world, signed, PadesLevel.B_T)
    finally:
        await timestamper.close()
    assert world.hits.count("POST /tsa") == 3  # pyHanko's one size-estimate token, then one per signature


async def test_the_service_engine_stamps_at_acar_signing_tsa_url(world: World) -> None:
    """ACAR_SIGNING_TSA_URL: the service's engine (api.deps.SigningEngine) takes its time-stamps from that URL, with
    its extra trust roots (ACAR_SIGNING_TRUST_ROOTS) beside the built-in root, and closes its client."""
    before = world.hits.count("POST /tsa")
    engine = SigningEngine(world.services.pki, world.services.tsa, tsa_url=world.tsa_url,
                           trust_roots=[world.directory / "root.pem"])
    try:
        out = BytesIO()
        await engine.sign(BytesIO(make_pdf()), out, world.signer, SignatureOptions(level=PadesLevel.B_LT),
                          actor="signer")
        await check_all(world, out.getvalue(), PadesLevel.B_LT)
    finally:
        await engine.close()
    assert world.hits.count("POST /tsa") - before == 2  # pyHanko's size-estimate token, then the signature's


async def test_refused_or_unreachable_timestamp_is_an_error_and_nothing_is_written(world: World) -> None:
    unreachable = UrlTimeStamper(f"http://127.0.0.1:{free_port()}/tsa", timeout=2)
    tsa = await world.services.pki.tsa_key()
    async with world.services.sessions() as session, session.begin():
        await world.services.pki.revoke(session, tsa.serial_hex, "keyCompromise", actor="test")
    for engine in (PadesEngine(timestamper=unreachable, validation=None), world.engine):
        out = BytesIO()
        with pytest.raises(TimestampUnavailable) as raised:
            await engine.sign(BytesIO(make_pdf()), out, world.signer, SignatureOptions(level=PadesLevel.B_T),
                              actor="signer")
        assert raised.value.code == "timestamp_unavailable"
        assert out.getvalue() == b""
    await unreachable.close()


async def test_a_remembered_contents_size_too_small_is_estimated_again(world: World) -> None:
    """The /Contents size is estimated once per certificate and level kind; when a later CMS does not fit (a
    longer time-stamp token), the engine estimates afresh instead of failing."""
    engine = PadesEngine(timestamper=world.timestamper, validation=world.validation)
    await world.sign(make_pdf(), PadesLevel.B_T, engine=engine)
    (key, size), = engine._sizes.items()
    engine._sizes[key] = 600  # far too small for a CMS with a time-stamp token
    signed = await world.sign(make_pdf(), PadesLevel.B_T, engine=engine)
    assert engine._sizes[key] == size
    await check_all(world, signed, PadesLevel.B_T)


async def test_b_lt_with_a_revoked_signer_certificate_is_refused(world: World) -> None:
    """The OCSP answer fetched for B-LT says revoked: no signature that could never validate is written."""
    serial = serial_to_hex(world.signer.certificate.serial_number)
    async with world.services.sessions() as session, session.begin():
        await world.services.pki.revoke(session, serial, "keyCompromise", actor="test")
    out = BytesIO()
    with pytest.raises(SignerCertificateRevoked) as raised:
        await world.engine.sign(BytesIO(make_pdf()), out, world.signer, SignatureOptions(level=PadesLevel.B_LT),
                                actor="signer")
    assert raised.value.sub_indication == "REVOKED_NO_POE"
    assert out.getvalue() == b""
