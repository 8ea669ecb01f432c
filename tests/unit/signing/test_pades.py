"""The PAdES engine on a real PKI (Açar's own CA, OCSP responder and TSA on the test database), ECDSA P-256
software keys, every level checked by independent validators: pyHanko's validator for the level, poppler's
pdfsig (NSS database trusting the test root, OCSP answered on loopback), qpdf --check, openssl cms -verify over
the signed byte range and openssl ts -verify for the time-stamp tokens."""

from __future__ import annotations

import datetime as dt
import re
from io import BytesIO

import pytest
from asn1crypto import cms, ocsp
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

from api.deps import SigningEngine
from api.settings import Settings
from keys.profiles import Profile
from keys.x509 import serial_to_hex
from signing.core.errors import (
    AppearanceUnavailable,
    InvalidSignatureOptions,
    SignerCertificateRevoked,
    SignerCredentialsUnusable,
    TimestampUnavailable,
)
from signing.core.levels import PadesLevel
from signing.core.pades import PadesEngine, SignatureOptions, VisibleSignature
from signing.core.timestamps import UrlTimeStamper
from tests.local_http import free_port
from tests.pades_world import SEAL, World, pdfsig, qpdf_check, run_tool, world_settings
from tests.pdf_tools import catalog_version, header_version, make_pdf, signature_parts, xmp_packet

REVINFO_MAX_AGE = dt.timedelta(days=60)


@pytest.fixture
def settings(settings: Settings, pki_port: int) -> Settings:
    return world_settings(settings, pki_port)


# --- the independent checks --------------------------------------------------------------------------------------


async def openssl_cms_verify(world: World, pdf: bytes, index: int) -> cms.SignedData:
    """openssl cms -verify of the `index`th signature's /Contents over its ByteRange, trusting only the root."""
    signed, contents = signature_parts(pdf, index)
    (world.directory / "signed.bin").write_bytes(signed)
    (world.directory / "contents.der").write_bytes(contents)
    out = await run_tool("openssl", "cms", "-verify", "-binary", "-inform", "DER",
                         "-in", world.directory / "contents.der", "-content", world.directory / "signed.bin",
                         "-CAfile", world.directory / "root.pem", "-purpose", "any", "-out", "/dev/null")
    assert "Verification successful" in out, out
    signed_data: cms.SignedData = cms.ContentInfo.load(contents)["content"]
    return signed_data


async def openssl_ts_verify(world: World, token: cms.ContentInfo, data: bytes) -> None:
    """openssl ts -verify of an RFC 3161 token over `data`, trusting only the root."""
    (world.directory / "token.der").write_bytes(token.dump())
    (world.directory / "imprinted.bin").write_bytes(data)
    out = await run_tool("openssl", "ts", "-verify", "-in", world.directory / "token.der", "-token_in",
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
    fonts = (await run_tool("pdffonts", world.directory / "visible.pdf")).splitlines()[2:]
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
