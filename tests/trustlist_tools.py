"""ETSI TS 119 612 trusted lists for tests, built here and signed by the Debian `xmlsec1` tool (independent of
signxml, which `signing.core.trustlist` verifies with).

`build_trusted_list` writes the XML of a list with one trust service provider and the services given;
`sign_with_xmlsec1` adds an enveloped XAdES-BES signature (ETSI TS 119 612 section 5.7.1, ETSI EN 319 132-1: a
ds:Reference to the whole list with the enveloped-signature transform, a second one to xades:SignedProperties
carrying SigningCertificateV2 and SigningTime, the signer's certificate in ds:X509Data). The XAdES properties are
written into the template here; xmlsec1 computes the digests and the signature value.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TSL_NS = "http://uri.etsi.org/02231/v2#"
SIE_NS = "http://uri.etsi.org/TrstSvc/SvcInfoExt/eSigDir-1999-93-EC-TrustedList/#"
XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
CA_QC = "http://uri.etsi.org/TrstSvc/Svctype/CA/QC"
GRANTED = "http://uri.etsi.org/TrstSvc/TrustedList/Svcstatus/granted"
WITHDRAWN = "http://uri.etsi.org/TrstSvc/TrustedList/Svcstatus/withdrawn"
SVC_INFO_EXT = "http://uri.etsi.org/TrstSvc/TrustedList/SvcInfoExt"
EU_GENERIC = "http://uri.etsi.org/TrstSvc/TrustedList/TSLType/EUgeneric"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(name: str, key: ec.EllipticCurvePrivateKey, *, now: dt.datetime) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "AZ"), x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=3650))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))


def make_leaf(name: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, now: dt.datetime,
              not_before: dt.datetime | None = None, ca_flag: bool = False) -> x509.Certificate:
    """A signer's certificate (keyUsage nonRepudiation) issued by `ca`, or a non-CA self-signed one."""
    key = make_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "AZ"), x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = not_before or now - dt.timedelta(days=1)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(ca_key, hashes.SHA256()))


def make_tlso(name: str, *, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A trusted list scheme operator's signing certificate (self-signed, as national TLSO certificates are
    published out of band, ETSI TS 119 612 section 5.7.1) and its key."""
    key = make_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "AZ"), x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=30))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


@dataclass(frozen=True)
class Status:
    """One status of a service: its URI and since when (ServiceStatus, StatusStartingTime)."""

    uri: str
    since: dt.datetime


@dataclass(frozen=True)
class Service:
    """A CA/QC service; `statuses` oldest first (the last is current, the others become ServiceHistory)."""

    name: str
    certificate: x509.Certificate
    statuses: tuple[Status, ...]
    qualifiers: tuple[str, ...] = ("QCStatement", "QCForESig", "QCWithQSCD")
    service_type: str = CA_QC
    issues: str = "ForeSignatures"
    """The additional service information (TS 119 612 section 5.5.9.4): ForeSignatures, ForeSeals, ..."""


@dataclass(frozen=True)
class ListInfo:
    territory: str = "AZ"
    sequence: int = 12
    issued: dt.datetime = field(default_factory=lambda: dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    next_update: dt.datetime | None = None
    version: int = 5
    tsl_type: str = EU_GENERIC
    tsp_name: str = "Azerbaijan Test TSP"


def _names(tag: str, text: str) -> str:
    return f'<tsl:{tag}><tsl:Name xml:lang="en">{escape(text)}</tsl:Name></tsl:{tag}>'


def _extensions(service: Service) -> str:
    qualifiers = "".join(f'<tslx:Qualifier uri="{SVC_INFO_EXT}/{q}"/>' for q in service.qualifiers)
    return (
        '<tsl:ServiceInformationExtensions>'
        '<tsl:Extension Critical="true">'
        f'<tslx:Qualifications xmlns:tslx="{SIE_NS}"><tslx:QualificationElement>'
        f'<tslx:Qualifiers>{qualifiers}</tslx:Qualifiers>'
        '<tslx:CriteriaList assert="all"><tslx:KeyUsage>'
        '<tslx:KeyUsageBit name="nonRepudiation">true</tslx:KeyUsageBit>'
        '</tslx:KeyUsage></tslx:CriteriaList>'
        '</tslx:QualificationElement></tslx:Qualifications>'
        '</tsl:Extension>'
        '<tsl:Extension Critical="true"><tsl:AdditionalServiceInformation>'
        f'<tsl:URI xml:lang="en">{SVC_INFO_EXT}/{service.issues}</tsl:URI>'
        '</tsl:AdditionalServiceInformation></tsl:Extension>'
        '</tsl:ServiceInformationExtensions>'
    )


def _service_xml(service: Service) -> str:
    der = base64.b64encode(service.certificate.public_bytes(serialization.Encoding.DER)).decode()
    identity = (f'<tsl:ServiceDigitalIdentity><tsl:DigitalId><tsl:X509Certificate>{der}</tsl:X509Certificate>'
                '</tsl:DigitalId></tsl:ServiceDigitalIdentity>')
    current, history = service.statuses[-1], service.statuses[:-1]
    info = (f'<tsl:ServiceInformation><tsl:ServiceTypeIdentifier>{service.service_type}</tsl:ServiceTypeIdentifier>'
            f'{_names("ServiceName", service.name)}{identity}'
            f'<tsl:ServiceStatus>{current.uri}</tsl:ServiceStatus>'
            f'<tsl:StatusStartingTime>{_iso(current.since)}</tsl:StatusStartingTime>'
            f'{_extensions(service)}</tsl:ServiceInformation>')
    instances = "".join(
        f'<tsl:ServiceHistoryInstance><tsl:ServiceTypeIdentifier>{service.service_type}</tsl:ServiceTypeIdentifier>'
        f'{_names("ServiceName", service.name)}{identity}'
        f'<tsl:ServiceStatus>{status.uri}</tsl:ServiceStatus>'
        f'<tsl:StatusStartingTime>{_iso(status.since)}</tsl:StatusStartingTime>'
        f'{_extensions(service)}</tsl:ServiceHistoryInstance>'
        for status in reversed(history))
    hist = f'<tsl:ServiceHistory>{instances}</tsl:ServiceHistory>' if history else ""
    return f'<tsl:TSPService>{info}{hist}</tsl:TSPService>'


def build_trusted_list(services: list[Service], info: ListInfo | None = None, *, doctype: str = "",
                       operator_name: str = "Azerbaijan Trusted List Operator") -> bytes:
    """The XML of a trusted list (ETSI TS 119 612 v2 schema, namespace http://uri.etsi.org/02231/v2#)."""
    info = info or ListInfo()
    next_update = info.next_update or info.issued + dt.timedelta(days=180)
    services_xml = "".join(_service_xml(s) for s in services)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n' + doctype +
        f'<tsl:TrustServiceStatusList xmlns:tsl="{TSL_NS}" Id="tsl-root" TSLTag="http://uri.etsi.org/19612/TSLTag">'
        '<tsl:SchemeInformation>'
        f'<tsl:TSLVersionIdentifier>{info.version}</tsl:TSLVersionIdentifier>'
        f'<tsl:TSLSequenceNumber>{info.sequence}</tsl:TSLSequenceNumber>'
        f'<tsl:TSLType>{info.tsl_type}</tsl:TSLType>'
        f'{_names("SchemeOperatorName", operator_name)}'
        f'{_names("SchemeName", "AZ: Trusted list including information related to the qualified TSPs")}'
        f'<tsl:SchemeTerritory>{info.territory}</tsl:SchemeTerritory>'
        '<tsl:HistoricalInformationPeriod>65535</tsl:HistoricalInformationPeriod>'
        f'<tsl:ListIssueDateTime>{_iso(info.issued)}</tsl:ListIssueDateTime>'
        f'<tsl:NextUpdate><tsl:dateTime>{_iso(next_update)}</tsl:dateTime></tsl:NextUpdate>'
        '</tsl:SchemeInformation>'
        '<tsl:TrustServiceProviderList><tsl:TrustServiceProvider>'
        f'<tsl:TSPInformation>{_names("TSPName", info.tsp_name)}</tsl:TSPInformation>'
        f'<tsl:TSPServices>{services_xml}</tsl:TSPServices>'
        '</tsl:TrustServiceProvider></tsl:TrustServiceProviderList>'
        '</tsl:TrustServiceStatusList>'
    ).encode()


def _signature_template(signer: x509.Certificate, signing_time: dt.datetime) -> str:
    cert_digest = base64.b64encode(hashlib.sha256(signer.public_bytes(serialization.Encoding.DER)).digest()).decode()
    c14n = "http://www.w3.org/2001/10/xml-exc-c14n#"
    sha256 = "http://www.w3.org/2001/04/xmlenc#sha256"
    return (
        f'<ds:Signature xmlns:ds="{DS_NS}" Id="tsl-signature"><ds:SignedInfo>'
        f'<ds:CanonicalizationMethod Algorithm="{c14n}"/>'
        '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"/>'
        '<ds:Reference Id="ref-tsl" URI=""><ds:Transforms>'
        f'<ds:Transform Algorithm="{DS_NS}enveloped-signature"/><ds:Transform Algorithm="{c14n}"/>'
        f'</ds:Transforms><ds:DigestMethod Algorithm="{sha256}"/><ds:DigestValue/></ds:Reference>'
        '<ds:Reference Type="http://uri.etsi.org/01903#SignedProperties" URI="#xades-signed-properties">'
        f'<ds:Transforms><ds:Transform Algorithm="{c14n}"/></ds:Transforms>'
        f'<ds:DigestMethod Algorithm="{sha256}"/><ds:DigestValue/></ds:Reference>'
        '</ds:SignedInfo><ds:SignatureValue/>'
        '<ds:KeyInfo><ds:X509Data/></ds:KeyInfo>'
        f'<ds:Object><xades:QualifyingProperties xmlns:xades="{XADES_NS}" Target="#tsl-signature">'
        '<xades:SignedProperties Id="xades-signed-properties"><xades:SignedSignatureProperties>'
        f'<xades:SigningTime>{_iso(signing_time)}</xades:SigningTime>'
        '<xades:SigningCertificateV2><xades:Cert><xades:CertDigest>'
        f'<ds:DigestMethod Algorithm="{sha256}"/><ds:DigestValue>{cert_digest}</ds:DigestValue>'
        '</xades:CertDigest></xades:Cert></xades:SigningCertificateV2>'
        '</xades:SignedSignatureProperties></xades:SignedProperties>'
        '</xades:QualifyingProperties></ds:Object></ds:Signature>'
    )


def sign_with_xmlsec1(xml: bytes, signer: x509.Certificate, key: ec.EllipticCurvePrivateKey, *,
                      signing_time: dt.datetime | None = None) -> bytes:
    """`xmlsec1 --sign` of `xml` with the signature template inserted as the root's last child."""
    template = _signature_template(signer, signing_time or dt.datetime.now(dt.UTC)).encode()
    closing = b"</tsl:TrustServiceStatusList>"
    assert xml.rstrip().endswith(closing)
    unsigned = xml.rstrip()[: -len(closing)] + template + closing
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
        (directory / "cert.pem").write_bytes(signer.public_bytes(serialization.Encoding.PEM))
        (directory / "tl.xml").write_bytes(unsigned)
        proc = subprocess.run(
            ["xmlsec1", "--sign", "--privkey-pem", f"{directory / 'key.pem'},{directory / 'cert.pem'}",
             "--id-attr:Id", f"{XADES_NS}:SignedProperties", "--output", str(directory / "signed.xml"),
             str(directory / "tl.xml")],
            capture_output=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"xmlsec1 --sign failed: {proc.stderr.decode(errors='replace')}")
        return (directory / "signed.xml").read_bytes()


def verify_with_xmlsec1(signed: bytes, signer: x509.Certificate) -> None:
    """`xmlsec1 --verify` with the signer's certificate as the only trusted one (the tool's own check)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "cert.pem").write_bytes(signer.public_bytes(serialization.Encoding.PEM))
        (directory / "signed.xml").write_bytes(signed)
        proc = subprocess.run(
            ["xmlsec1", "--verify", "--trusted-pem", str(directory / "cert.pem"),
             "--id-attr:Id", f"{XADES_NS}:SignedProperties", str(directory / "signed.xml")],
            capture_output=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"xmlsec1 --verify failed: {proc.stderr.decode(errors='replace')}")


# --- a scheme operator that publishes lists (the end-to-end validation tests) ----------------------------------------


@dataclass(frozen=True)
class Operator:
    """A trusted list scheme operator: its certificate (what ACAR_VALIDATION_TRUSTED_LIST_SIGNERS names) and key;
    `publish` builds a list of `services` and signs it with xmlsec1."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, name: str = "AZ Trusted List Scheme Operator", *, now: dt.datetime | None = None) -> Operator:
        cert, key = make_tlso(name, now=now or dt.datetime.now(dt.UTC))
        return cls(certificate=cert, key=key)

    def publish(self, services: list[Service], info: ListInfo | None = None) -> bytes:
        return sign_with_xmlsec1(build_trusted_list(services, info), self.certificate, self.key)

    def write_pem(self, path: Path) -> Path:
        path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        return path


def from_der(der: bytes) -> x509.Certificate:
    """A certificate of another library (asn1crypto's `.dump()`) as `Service` takes it."""
    return x509.load_der_x509_certificate(der)


def tamper(signed: bytes, old: bytes, new: bytes) -> bytes:
    """`signed` with the first `old` (inside the signed content) replaced: the signature no longer verifies."""
    assert old in signed, old
    return signed.replace(old, new, 1)
