"""A trusted list changes validation, end to end (issue 14 "Trust"): Açar's own signatures (the PAdES `world`, B-LT,
revocation data embedded) validated by `Validator` whose only trust is an ETSI TS 119 612 list, built by
tests/trustlist_tools.py and signed by xmlsec1, read by `TrustedList.parse` (its signature checked).

- The list's CA/QC service supplies the anchor (signing.core.trustlist: anchors are the certificates of every CA/QC
  service, whatever its status) and the qualified status (ETSI TS 119 615 through pyHanko's QualificationAssessor,
  at the best signature time, ETSI TS 119 102-1 section 5.6.2.1).
- A service withdrawn before the signature: the path is still built (the signature TOTAL-PASSED) but the list says
  not qualified, and the report follows the list over the certificate's own qcStatements (ETSI EN 319 412-5), which
  say qualified. A service withdrawn after the signature time-stamp still qualifies it, validated as of two days
  later; a service's QCNoQSCD qualifier overrides the certificate's QcSSCD; a service may name the root instead of
  the issuing CA.
- A list that does not name the CA: no anchor (INDETERMINATE / NO_CERTIFICATE_CHAIN_FOUND, ETSI TS 119 102-1 table
  6) unless another anchor is configured; then the qualified status comes from the qcStatements.
"""

from __future__ import annotations

import datetime as dt
from io import BytesIO

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding

from api.settings import Settings
from signing.core.inspect import InputPolicy
from signing.core.levels import PadesLevel
from signing.core.report import Indication, Qualification, SignatureReport, SubIndication, ValidationReport
from signing.core.trust import TrustPolicy
from signing.core.trustlist import TrustedList
from signing.core.validation import Validator
from tests.pades_world import World, world_settings
from tests.pdf_tools import make_pdf
from tests.trustlist_tools import (
    GRANTED,
    WITHDRAWN,
    ListInfo,
    Operator,
    Service,
    Status,
    from_der,
    make_ca,
    make_key,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
ISSUED = NOW - dt.timedelta(days=1)
GRANTED_SINCE = NOW - dt.timedelta(days=800)
SERVICE = "Açar Qualified CA for electronic signatures"


@pytest.fixture
def settings(settings: Settings, pki_port: int) -> Settings:
    return world_settings(settings, pki_port)


@pytest.fixture(scope="module")
def operator() -> Operator:
    return Operator.create(now=NOW)


def trusted_list(operator: Operator, *services: Service, issued: dt.datetime = ISSUED,
                 at: dt.datetime | None = None) -> TrustedList:
    """The list of `services`, signed by the operator and read back (at `at`, default now) as the validation
    service reads it."""
    xml = operator.publish(list(services), ListInfo(issued=issued))
    signer = asn1_x509.Certificate.load(operator.certificate.public_bytes(Encoding.DER))
    return TrustedList.parse(xml, [signer], at=at or dt.datetime.now(dt.UTC))


def issuing_service(world: World, *statuses: Status) -> Service:
    """A CA/QC service (ETSI TS 119 612 5.5.1) whose digital identity is Açar's issuing CA (QCStatement, QCForESig,
    QCWithQSCD: trustlist_tools' default qualifiers)."""
    return Service(SERVICE, from_der(world.issuing.dump()), statuses or (Status(GRANTED, GRANTED_SINCE),))


async def validate(listed: TrustedList | None, pdf: bytes, *anchors: asn1_x509.Certificate) -> ValidationReport:
    """Embedded data only (no fetching): B-LT carries the OCSP response the path needs."""
    trust = TrustPolicy(anchors=anchors, sources=tuple("anchor" for _ in anchors), trusted_list=listed)
    return await Validator(trust=trust, input_policy=InputPolicy(), fetching=None).validate(BytesIO(pdf))


def the_signature(report: ValidationReport) -> SignatureReport:
    (signature,) = report.signatures
    return signature


async def test_a_granted_service_is_the_anchor_and_says_qualified(world: World, operator: Operator) -> None:
    listed = trusted_list(operator, issuing_service(world))
    signed = await world.sign(make_pdf(), PadesLevel.B_LT)
    report = await validate(listed, signed)  # no anchor but the list's
    signature = the_signature(report)
    assert signature.indication is Indication.TOTAL_PASSED, signature.as_json()
    assert report.all_passed
    assert report.trust_sources == (listed.description,)
    assert report.trust_sources[0].startswith("trusted list AZ #12")
    assert signature.signer is not None
    assert signature.signer.chain[-1].sha256 == world.issuing.sha256.hex(), "the path ends at the listed CA"
    assert signature.best_signature_time is not None
    assert signature.best_signature_time.source == "signature-timestamp"
    assert signature.qualification == Qualification(qualified=True, qc_type="esign", qscd=True,
                                                    source="trusted-list", trusted_service=SERVICE)


async def test_a_service_withdrawn_before_the_signature_anchors_but_does_not_qualify(
        world: World, operator: Operator) -> None:
    """The certificate's own qcStatements say qualified (QcCompliance, QcSSCD, QcType esign); the list says the
    service was withdrawn a day before the signature: the report follows the list (ETSI TS 119 615)."""
    withdrawn = NOW - dt.timedelta(days=1)
    listed = trusted_list(operator, issuing_service(world, Status(GRANTED, GRANTED_SINCE),
                                                   Status(WITHDRAWN, withdrawn)))
    assert [s.granted for s in listed.services] == [False]
    signed = await world.sign(make_pdf(), PadesLevel.B_LT)

    own = the_signature(await validate(None, signed, world.root))
    assert own.qualification == Qualification(qualified=True, qc_type="esign", qscd=True, source="qcStatements")

    signature = the_signature(await validate(listed, signed))
    assert signature.indication is Indication.TOTAL_PASSED, signature.as_json()
    assert signature.best_signature_time is not None and signature.best_signature_time.time > withdrawn
    assert signature.qualification == Qualification(qualified=False, qc_type=None, qscd=False,
                                                    source="trusted-list", trusted_service=SERVICE)

    # with the built-in root configured too, the list still decides the qualified status
    both = the_signature(await validate(listed, signed, world.root))
    assert both.indication is Indication.TOTAL_PASSED, both.as_json()
    assert both.qualification is not None and both.qualification.source == "trusted-list"
    assert both.qualification.qualified is False


async def test_a_list_that_does_not_name_the_ca_supplies_no_anchor(world: World, operator: Operator) -> None:
    other = Service("Another Qualified CA", make_ca("Another Qualified CA", make_key(), now=NOW),
                    (Status(GRANTED, GRANTED_SINCE),))
    listed = trusted_list(operator, other)
    signed = await world.sign(make_pdf(), PadesLevel.B_LT)

    signature = the_signature(await validate(listed, signed))
    assert signature.indication is Indication.INDETERMINATE, signature.as_json()
    assert signature.sub_indication is SubIndication.NO_CERTIFICATE_CHAIN_FOUND

    # another anchor finds the path; the list has nothing to say, the certificate's qcStatements answer
    anchored = await validate(listed, signed, world.root)
    signature = the_signature(anchored)
    assert signature.indication is Indication.TOTAL_PASSED, signature.as_json()
    assert signature.qualification == Qualification(qualified=True, qc_type="esign", qscd=True, source="qcStatements")
    assert anchored.trust_sources == ("anchor", listed.description)



async def test_a_service_naming_the_root_qualifies_through_the_issuing_ca(world: World, operator: Operator) -> None:
    """Some lists name a service by its root certificate: the path runs signer -> issuing CA -> listed root."""
    listed = trusted_list(operator, Service(SERVICE, from_der(world.root.dump()), (Status(GRANTED, GRANTED_SINCE),)))
    signed = await world.sign(make_pdf(), PadesLevel.B_LT)
    signature = the_signature(await validate(listed, signed))
    assert signature.indication is Indication.TOTAL_PASSED, signature.as_json()
    assert signature.signer is not None and signature.signer.chain[-1].sha256 == world.root.sha256.hex()
    assert signature.qualification == Qualification(qualified=True, qc_type="esign", qscd=True,
                                                    source="trusted-list", trusted_service=SERVICE)


async def test_the_lists_qualifiers_override_the_certificates_qscd_statement(world: World, operator: Operator) -> None:
    """The certificate says QcSSCD (EN 319 412-5 4.2.2); the service's Sie qualifier QCNoQSCD (TS 119 612
    5.5.9.2.3) says its key is not in a qualified device: the list wins."""
    service = Service(SERVICE, from_der(world.issuing.dump()), (Status(GRANTED, GRANTED_SINCE),),
                      qualifiers=("QCStatement", "QCForESig", "QCNoQSCD"))
    signed = await world.sign(make_pdf(), PadesLevel.B_LT)
    signature = the_signature(await validate(trusted_list(operator, service), signed))
    assert signature.indication is Indication.TOTAL_PASSED, signature.as_json()
    assert signature.qualification == Qualification(qualified=True, qc_type="esign", qscd=False,
                                                    source="trusted-list", trusted_service=SERVICE)



async def test_a_service_withdrawn_after_the_time_stamp_still_qualifies_the_signature(
        world: World, operator: Operator) -> None:
    """Validated as of two days later (embedded data only) with a list issued after the withdrawal: the qualified
    status is the one at the best signature time, the signature time-stamp (ETSI TS 119 102-1 5.6.2.1)."""
    signed = await world.sign(make_pdf(), PadesLevel.B_LT)
    first = the_signature(await validate(None, signed, world.root)).best_signature_time
    assert first is not None and first.source == "signature-timestamp"
    withdrawn = first.time + dt.timedelta(hours=1)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    service = issuing_service(world, Status(GRANTED, GRANTED_SINCE), Status(WITHDRAWN, withdrawn))
    listed = trusted_list(operator, service, issued=withdrawn + dt.timedelta(hours=1), at=later)
    trust = TrustPolicy(anchors=(), sources=(), trusted_list=listed)
    report = await Validator(trust=trust, input_policy=InputPolicy(), fetching=None).validate(BytesIO(signed), at=later)
    signature = the_signature(report)
    assert report.embedded_only and report.validation_time == later
    assert signature.indication is Indication.TOTAL_PASSED, signature.as_json()
    assert signature.best_signature_time == first
    assert signature.qualification == Qualification(qualified=True, qc_type="esign", qscd=True,
                                                    source="trusted-list", trusted_service=SERVICE)
