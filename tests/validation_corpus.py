"""A corpus of signed PDFs from other producers and certificate scenarios, for the validation tests (issue 14).

Independent of Açar's keys/: a throwaway PKI built with `cryptography`'s X.509 builder (root -> issuing CA ->
leaf certificates, plus a second, untrusted root), an OCSP responder (RFC 6960, responses built with
`cryptography.x509.ocsp.OCSPResponseBuilder`, signed by the issuing CA itself, RFC 6960 section 4.2.2.2 case 1),
CRLs (RFC 5280 section 5) and CA certificates (caIssuers), and an RFC 3161 TSA (pyHanko's DummyTimeStamper behind
HTTP), all on 127.0.0.1. The documents are signed by pyHanko 0.38 (RSA and ECDSA, PAdES B-B .. B-LTA per ETSI
EN 319 142-1) and by poppler's `pdfsig -add-signature` (an NSS database), each case carrying the verdict ETSI
TS 119 102-1 expects of a validator that trusts `Corpus.root` only.

The timeline is real: every document is signed at build time; a signer "revoked after the time-stamp" is revoked
a second after its signature time-stamp, and `build_corpus` waits until that revocation is in the past (at most
a couple of seconds), so that the OCSP responder and the CRL report it. Expiry is checked "as of" a later date
(`Case.at`, ETSI TS 119 102-1 section 5.6.2.1 validation time): the expiring signer's certificate ends a day
after signing and the case is validated two days later.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend
from pyhanko_certvalidator.registry import SimpleCertificateStore

from signing.core.report import SubIndication
from tests.local_http import QuietHandler, serving
from tests.signing_tools import minimal_pdf

PRIVATE_CRITICAL_OID = x509.ObjectIdentifier("1.3.6.1.4.1.99999.14.1")
"""A private extension no validator knows: marked critical, RFC 5280 section 4.2 says the certificate must be
rejected."""
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
"""id-kp-documentSigning (RFC 9336)."""
NSS_NICK = "corpus-signer"
PKCS12_PASSWORD = b"corpus"
REVOCATION_DELAY = dt.timedelta(seconds=1)
"""How long after its signature time-stamp the "revoked after" signer is revoked."""
EXPIRY = dt.timedelta(days=1)
"""How long the expiring signer's certificate is valid after signing."""
LATER = dt.timedelta(days=2)
"""How far ahead the expiry cases are validated (past the expiring certificate, within every other)."""
REVINFO_VALIDITY = dt.timedelta(days=7)
"""nextUpdate - thisUpdate of every OCSP response and CRL: a validation "as of" LATER still finds them current."""

CASE_NAMES = (
    "expired-B-B", "expired-B-T", "expired-B-LTA",
    *(f"pyhanko-{key}-{level}" for key in ("rsa-2048", "ecdsa-p256") for level in ("B-B", "B-T", "B-LT", "B-LTA")),
    "pyhanko-rsa-3072-B-T", "pdfsig-pkcs7", "revoked-before-signing-B-B", "revoked-before-signing-B-T",
    "untrusted-root-B-T", "critical-extension-B-T", "no-non-repudiation-B-T", "eku-server-auth-B-T",
    "revoked-after-timestamp-B-T", "revoked-after-timestamp-B-LT",
)
"""Every case `build_corpus` makes, in the order it makes them (the tests parametrize over these)."""

PASSED = frozenset({None})
REVOKED = frozenset({SubIndication.REVOKED, SubIndication.REVOKED_NO_POE})
EXPIRED_NO_LTV = frozenset({SubIndication.OUT_OF_BOUNDS_NO_POE, SubIndication.OUT_OF_BOUNDS_NOT_REVOKED,
                            SubIndication.EXPIRED})
UNTRUSTED = frozenset({SubIndication.NO_CERTIFICATE_CHAIN_FOUND})
CRITICAL_EXTENSION = frozenset({SubIndication.CHAIN_CONSTRAINTS_FAILURE,
                                SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE})
SIG_CONSTRAINTS = frozenset({SubIndication.SIG_CONSTRAINTS_FAILURE})

_DER = serialization.Encoding.DER
_PEM = serialization.Encoding.PEM


def _seconds(moment: dt.datetime) -> dt.datetime:
    return moment.replace(microsecond=0)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(_DER))


# --- the PKI -------------------------------------------------------------------------------------------------------


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class Ca:
    """A CA of the corpus PKI, the certificates it issued (by serial) and their revocations (RFC 5280 5.3.1)."""

    name: str
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    issued: dict[int, x509.Certificate] = field(default_factory=dict)
    revoked: dict[int, dt.datetime] = field(default_factory=dict)

    def revoked_now(self, serial: int, now: dt.datetime) -> dt.datetime | None:
        """The revocation time of `serial` if it is in the past: a responder knows of a revocation only after it."""
        at = self.revoked.get(serial)
        return at if at is not None and at <= now else None


@dataclass(frozen=True)
class Leaf:
    """A signer: its key, its certificate and the CA that issued it."""

    key: PrivateKey
    certificate: x509.Certificate
    ca: Ca

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return (self.certificate, self.ca.certificate)

    def pkcs12(self) -> bytes:
        return pkcs12.serialize_key_and_certificates(
            NSS_NICK.encode(), self.key, self.certificate, [self.ca.certificate],
            serialization.BestAvailableEncryption(PKCS12_PASSWORD))

    def signer(self) -> signers.SimpleSigner:
        cert = asn1(self.certificate)
        return signers.SimpleSigner(
            signing_cert=cert,
            signing_key=asn1_keys.PrivateKeyInfo.load(self.key.private_bytes(
                _DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
            cert_registry=SimpleCertificateStore.from_certs([cert, asn1(self.ca.certificate)]),
        )


def _name(cn: str, *extra: x509.NameAttribute) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "AZ"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corpus test PKI"), *extra,
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_usage(*, signing: bool = False, non_repudiation: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=signing, content_commitment=non_repudiation, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


class CorpusPki:
    """Root -> issuing CA -> leaves, a second (untrusted) root with its own issuing CA, and a TSA; OCSP, CRL and
    caIssuers URLs of every certificate point at `base` (the loopback server of `serve`)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.requests: list[str] = []
        """Every request the loopback server answered, in order: "POST /ocsp", "GET /crl/issuing.crl", ..."""
        self.start = _seconds(_now())
        root = self._root("root", "Corpus Root CA")
        other_root = self._root("other-root", "Corpus Untrusted Root CA")
        self.root = root.certificate
        self.other_root = other_root.certificate
        self.issuing = self._ca("issuing", "Corpus Issuing CA", root)
        self.other_issuing = self._ca("other", "Corpus Untrusted Issuing CA", other_root)
        self.cas = {ca.name: ca for ca in (root, other_root, self.issuing, self.other_issuing)}
        tsa_key = rsa.generate_private_key(65537, 2048)  # pyHanko's DummyTimeStamper signs with RSA only
        self.tsa = self.leaf("Corpus Time-Stamping Authority", key=tsa_key,
                             ekus=(ExtendedKeyUsageOID.TIME_STAMPING,), eku_critical=True,
                             key_usage=_key_usage(signing=True, non_repudiation=True)).certificate
        self.tsa_key = tsa_key

    def _root(self, name: str, cn: str) -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.start - dt.timedelta(days=2)).not_valid_after(self.start + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return Ca(name=name, certificate=cert, key=key)

    def _ca(self, name: str, cn: str, root: Ca) -> Ca:
        """An issuing CA whose status the root publishes in a CRL (RFC 5280 4.2.1.13), as pyHanko's past
        validation (ETSI TS 119 102-1 5.6.2.4) needs revocation data for every certificate of the path."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(root.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self.start - dt.timedelta(days=1)).not_valid_after(self.start + dt.timedelta(days=1825))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), critical=False)
            .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(f"{self.base}/ca/{root.name}.crt"))]), critical=False)
            .add_extension(self._crl_point(root), critical=False)
            .sign(root.key, hashes.SHA256())
        )
        root.issued[cert.serial_number] = cert
        return Ca(name=name, certificate=cert, key=key)

    def _crl_point(self, ca: Ca, url: str | None = None) -> x509.CRLDistributionPoints:
        return x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(url or f"{self.base}/crl/{ca.name}.crl")],
            relative_name=None, reasons=None, crl_issuer=None)])

    def leaf(self, cn: str, *, key: PrivateKey | None = None, ca: Ca | None = None,
             key_usage: x509.KeyUsage | None = None, ekus: tuple[x509.ObjectIdentifier, ...] = (),
             eku_critical: bool = False, critical_private: bool = False,
             not_after: dt.datetime | None = None, identifier: str | None = None,
             ocsp_url: str | None = None, crl_url: str | None = None) -> Leaf:
        """A certificate of `ca` (the issuing CA) for `key` (a fresh P-256 key): keyUsage digitalSignature and
        nonRepudiation unless `key_usage` says otherwise (RFC 5280 4.2.1.3, EN 319 412-2 4.3.2), no EKU unless
        `ekus`, OCSP/caIssuers (AIA) and a CRL distribution point at the loopback server (`ocsp_url` and
        `crl_url` put the AIA OCSP URL and the CRL distribution point elsewhere, e.g. on a closed port)."""
        ca = ca or self.issuing
        key = key or ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.SERIAL_NUMBER, identifier)] if identifier else []
        builder = (
            x509.CertificateBuilder().subject_name(_name(cn, *attributes)).issuer_name(ca.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self.start - dt.timedelta(hours=1))
            .not_valid_after(not_after or self.start + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage or _key_usage(signing=True, non_repudiation=True), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .add_extension(x509.AuthorityInformationAccess([
                x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                       x509.UniformResourceIdentifier(ocsp_url or f"{self.base}/ocsp")),
                x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                       x509.UniformResourceIdentifier(f"{self.base}/ca/{ca.name}.crt")),
            ]), critical=False)
            .add_extension(self._crl_point(ca, crl_url), critical=False)
        )
        if ekus:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=eku_critical)
        if critical_private:
            builder = builder.add_extension(x509.UnrecognizedExtension(PRIVATE_CRITICAL_OID, b"\x05\x00"),
                                            critical=True)
        cert = builder.sign(ca.key, hashes.SHA256())
        ca.issued[cert.serial_number] = cert
        return Leaf(key=key, certificate=cert, ca=ca)

    def revoke(self, leaf: Leaf, at: dt.datetime) -> None:
        leaf.ca.revoked[leaf.certificate.serial_number] = _seconds(at)

    # --- what the loopback server answers ------------------------------------------------------------------------

    def ocsp(self, request_der: bytes) -> bytes:
        """An RFC 6960 response to `request_der`, signed by the certificate's issuer (section 4.2.2.2 case 1)."""
        try:
            request = ocsp.load_der_ocsp_request(request_der)
        except ValueError:
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        ca = next((ca for ca in self.cas.values() if request.issuer_key_hash == _key_hash(ca, request)), None)
        cert = ca.issued.get(request.serial_number) if ca is not None else None
        if ca is None or cert is None:
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        now = _seconds(_now())
        revoked_at = ca.revoked_now(cert.serial_number, now)
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=cert, issuer=ca.certificate, algorithm=request.hash_algorithm,
            cert_status=ocsp.OCSPCertStatus.REVOKED if revoked_at else ocsp.OCSPCertStatus.GOOD,
            this_update=now, next_update=now + REVINFO_VALIDITY, revocation_time=revoked_at,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked_at else None,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, ca.certificate)
        for extension in request.extensions:
            if isinstance(extension.value, x509.OCSPNonce):
                builder = builder.add_extension(extension.value, critical=False)
        return builder.sign(ca.key, hashes.SHA256()).public_bytes(_DER)

    def crl(self, name: str) -> bytes:
        ca = self.cas[name]
        now = _seconds(_now())
        builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.certificate.subject)
                   .last_update(now).next_update(now + REVINFO_VALIDITY)
                   .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                                  critical=False))
        for serial in ca.revoked:
            revoked_at = ca.revoked_now(serial, now)
            if revoked_at is not None:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(revoked_at)
                    .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False).build())
        return builder.sign(ca.key, hashes.SHA256()).public_bytes(_DER)

    def timestamper(self) -> DummyTimeStamper:
        return DummyTimeStamper(
            tsa_cert=asn1(self.tsa),
            tsa_key=asn1_keys.PrivateKeyInfo.load(self.tsa_key.private_bytes(
                _DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
            certs_to_embed=SimpleCertificateStore.from_certs([asn1(self.issuing.certificate)]),
        )


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(_DER)


def _key_hash(ca: Ca, request: ocsp.OCSPRequest) -> bytes:
    digest = hashes.Hash(request.hash_algorithm)
    digest.update(_public_key_bits(ca.certificate))
    return digest.finalize()


def _public_key_bits(cert: x509.Certificate) -> bytes:
    """The BIT STRING value of subjectPublicKey (what RFC 6960 4.1.1 issuerKeyHash hashes)."""
    return asn1(cert).public_key["public_key"].contents[1:]


FAILING_OCSP_PATH = "/ocsp-down"
"""An OCSP responder that is down: it answers every request HTTP 500 (no OCSP response at all, RFC 6960 A.1)."""


@contextmanager
def serve(pki_holder: list[CorpusPki]) -> Iterator[str]:
    """POST /ocsp and GET /ocsp/<base64>, GET /crl/NAME.crl, GET /ca/NAME.crt, POST /tsa on 127.0.0.1, and
    `FAILING_OCSP_PATH` answering 500; the PKI is set into `pki_holder` once the base URL is known, and every
    request is logged in its `requests`."""
    lock = threading.Lock()
    stamper: list[DummyTimeStamper] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            pki = pki_holder[0]
            pki.requests.append(f"POST {self.path}")
            if self.path == FAILING_OCSP_PATH:
                self.reply(b"responder down", "text/plain", 500)
            elif self.path == "/ocsp":
                self.reply(pki.ocsp(body), "application/ocsp-response")
            elif self.path == "/tsa":
                with lock:
                    if not stamper:
                        stamper.append(pki.timestamper())
                    reply = stamper[0].request_tsa_response(tsp.TimeStampReq.load(body))
                self.reply(reply.dump(), "application/timestamp-reply")
            else:
                self.reply(b"", "text/plain", 404)

        def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's name
            pki = pki_holder[0]
            pki.requests.append(f"GET {self.path}")
            if self.path.startswith(FAILING_OCSP_PATH):
                self.reply(b"responder down", "text/plain", 500)
            elif self.path.startswith("/ocsp/"):
                der = base64.b64decode(urllib.parse.unquote(self.path.removeprefix("/ocsp/")))
                self.reply(pki.ocsp(der), "application/ocsp-response")
            elif self.path.startswith("/crl/") and self.path.removeprefix("/crl/").removesuffix(".crl") in pki.cas:
                self.reply(pki.crl(self.path.removeprefix("/crl/").removesuffix(".crl")), "application/pkix-crl")
            elif self.path.startswith("/ca/") and self.path.removeprefix("/ca/").removesuffix(".crt") in pki.cas:
                ca = pki.cas[self.path.removeprefix("/ca/").removesuffix(".crt")]
                self.reply(ca.certificate.public_bytes(_DER), "application/pkix-cert")
            else:
                self.reply(b"", "text/plain", 404)

    with serving(Handler) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


# --- the producers -------------------------------------------------------------------------------------------------


LEVELS = ("B-B", "B-T", "B-LT", "B-LTA")


async def sign_pyhanko(pdf: bytes, leaf: Leaf, level: str, pki: CorpusPki, *, fetching: AIOHttpFetcherBackend,
                       signer_key_usage: frozenset[str] = frozenset({"non_repudiation"})) -> bytes:
    """pyHanko's PAdES signature (ETSI.CAdES.detached, EN 319 142-1) at `level`: B-T adds a signature time-stamp
    from the loopback TSA (HTTPTimeStamper), B-LT the DSS with the OCSP responses/CRLs pyHanko fetched from the
    loopback responder, B-LTA a document time-stamp over it."""
    timestamped = level != "B-B"
    long_term = level in ("B-LT", "B-LTA")
    meta = signers.PdfSignatureMetadata(
        field_name="Signature1", subfilter=SigSeedSubFilter.PADES, md_algorithm="sha256",
        embed_validation_info=long_term, use_pades_lta=level == "B-LTA",
        validation_context=ValidationContext(trust_roots=[asn1(pki.root)], allow_fetching=True,
                                             revocation_mode="hard-fail", fetcher_backend=fetching)
        if long_term else None,
        signer_key_usage=set(signer_key_usage),
    )
    timestamper = HTTPTimeStamper(f"{pki.base}/tsa", session=fetching.session) if timestamped else None
    output = io.BytesIO()
    await signers.PdfSigner(meta, leaf.signer(), timestamper=timestamper).async_sign_pdf(
        IncrementalPdfFileWriter(io.BytesIO(pdf), strict=True), output=output)
    return output.getvalue()


def _run(*args: str | Path) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def nss_database(directory: Path, pki: CorpusPki, leaf: Leaf | None = None) -> Path:
    """An NSS database (sql:) trusting the corpus root, with `leaf`'s key and certificate imported (PKCS#12)."""
    directory.mkdir(parents=True, exist_ok=True)
    _run("certutil", "-N", "-d", f"sql:{directory}", "--empty-password")
    root = directory / "root.pem"
    root.write_bytes(pki.root.public_bytes(_PEM))
    _run("certutil", "-A", "-d", f"sql:{directory}", "-n", "corpus-root", "-t", "CT,C,C", "-i", root)
    if leaf is not None:
        p12 = directory / "signer.p12"
        p12.write_bytes(leaf.pkcs12())
        _run("pk12util", "-i", p12, "-d", f"sql:{directory}", "-W", PKCS12_PASSWORD.decode(), "-K", "")
    return directory


def sign_pdfsig(pdf: bytes, nss: Path, directory: Path) -> bytes:
    """poppler's `pdfsig -add-signature` with the NSS database's key: adbe.pkcs7.detached with a signing-time
    attribute (poppler 22.12 refuses -etsi with -add-signature, and -sign -etsi still writes adbe.pkcs7.detached,
    so pdfsig gives no PAdES signature)."""
    source, target = directory / "pdfsig-in.pdf", directory / "pdfsig-out.pdf"
    source.write_bytes(pdf)
    _run("pdfsig", "-nssdir", f"sql:{nss}", "-add-signature", "-nick", NSS_NICK,
         "-new-signature-field-name", "Signature1", source, target)
    return target.read_bytes()


# --- the cases -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One corpus document and what ETSI TS 119 102-1 expects of a validator trusting `Corpus.root` only.

    `expected` holds the acceptable sub-indications (None: TOTAL-PASSED); `level` the PAdES baseline level the
    document reaches (EN 319 142-1 section 6, None for adbe.pkcs7.detached); `at` the validation time when the
    case is validated "as of" a later date (embedded data only); `finding` the Finding code the report carries."""

    name: str
    pdf: bytes
    producer: str
    key: str
    level: str | None
    sub_filter: str
    expected: frozenset[SubIndication | None]
    description: str
    at: dt.datetime | None = None
    finding: str | None = None
    signer: x509.Certificate | None = None

    @property
    def passes(self) -> bool:
        return self.expected == PASSED


@dataclass
class Corpus:
    pki: CorpusPki
    directory: Path
    nss: Path
    cases: dict[str, Case]

    @property
    def root(self) -> asn1_x509.Certificate:
        return asn1(self.pki.root)

    def __getitem__(self, name: str) -> Case:
        return self.cases[name]


PADES = "ETSI.CAdES.detached"
PKCS7 = "adbe.pkcs7.detached"


async def _build_cases(pki: CorpusPki, directory: Path) -> dict[str, Case]:
    pdf = minimal_pdf(text="Corpus")
    cases: list[Case] = []
    fetching = AIOHttpFetcherBackend()
    try:
        return await _sign_cases(pki, directory, pdf, cases, fetching)
    finally:
        await fetching.close()


async def _sign_cases(pki: CorpusPki, directory: Path, pdf: bytes, cases: list[Case],
                      fetching: AIOHttpFetcherBackend) -> dict[str, Case]:
    async def sign(pdf: bytes, leaf: Leaf, level: str, pki: CorpusPki, **options: frozenset[str]) -> bytes:
        return await sign_pyhanko(pdf, leaf, level, pki, fetching=fetching, **options)

    def add(name: str, signed: bytes, leaf: Leaf, *, level: str | None, expected: frozenset[SubIndication | None],
            description: str, key: str = "ECDSA-P256", producer: str = "pyHanko", sub_filter: str = PADES,
            at: dt.datetime | None = None, finding: str | None = None) -> None:
        cases.append(Case(name=name, pdf=signed, producer=producer, key=key, level=level, sub_filter=sub_filter,
                          expected=expected, description=description, at=at, finding=finding,
                          signer=leaf.certificate))

    # the signer whose certificate expires a day after signing: signed first, validated LATER
    expiring = pki.leaf("Corpus Expiring Signer", not_after=pki.start + EXPIRY)
    for level in ("B-B", "B-T", "B-LTA"):
        lta = level == "B-LTA"
        add(f"expired-{level}", await sign(pdf, expiring, level, pki), expiring, level=level,
            expected=PASSED if lta else EXPIRED_NO_LTV, at=pki.start + LATER,
            description="signer's certificate expired before the validation time; "
            + ("the DSS and a document time-stamp prove it valid when signed" if lta
               else "no revocation data from its validity period"))

    # the producers, every level, the signer valid and never revoked
    keys: dict[str, PrivateKey] = {"RSA-2048": rsa.generate_private_key(65537, 2048),
                                   "ECDSA-P256": ec.generate_private_key(ec.SECP256R1())}
    for key_name, key in keys.items():
        leaf = pki.leaf(f"Corpus Signer {key_name}", key=key, identifier="PNOAZ-1AB2C3D")
        for level in LEVELS:
            add(f"pyhanko-{key_name.lower()}-{level}", await sign(pdf, leaf, level, pki), leaf, key=key_name,
                level=level, expected=PASSED, description=f"pyHanko, {key_name}, PAdES {level}")
    rsa3072 = pki.leaf("Corpus Signer RSA-3072", key=rsa.generate_private_key(65537, 3072))
    add("pyhanko-rsa-3072-B-T", await sign(pdf, rsa3072, "B-T", pki), rsa3072, key="RSA-3072", level="B-T",
        expected=PASSED, description="pyHanko, RSA-3072, PAdES B-T")

    poppler = pki.leaf("Corpus Poppler Signer", key=rsa.generate_private_key(65537, 2048))
    signing_nss = nss_database(directory / "nss-signer", pki, poppler)
    add("pdfsig-pkcs7", sign_pdfsig(pdf, signing_nss, directory), poppler, key="RSA-2048", level=None,
        expected=PASSED, producer="pdfsig", sub_filter=PKCS7,
        description="poppler pdfsig -add-signature (NSS database), adbe.pkcs7.detached")

    # revoked before signing (the responder and the CRL already say so when the document is signed)
    revoked = pki.leaf("Corpus Revoked Signer")
    pki.revoke(revoked, pki.start - dt.timedelta(minutes=30))
    for level in ("B-B", "B-T"):
        add(f"revoked-before-signing-{level}", await sign(pdf, revoked, level, pki), revoked, level=level,
            expected=REVOKED, description="signer's certificate revoked 30 minutes before signing")

    # certificate scenarios, each a PAdES B-T with the signer's certificate as named
    untrusted = pki.leaf("Corpus Signer of an Untrusted Root", ca=pki.other_issuing)
    add("untrusted-root-B-T", await sign(pdf, untrusted, "B-T", pki), untrusted, level="B-T",
        expected=UNTRUSTED, description="signer's chain ends in a root the validator does not trust")
    critical = pki.leaf("Corpus Signer with an Unknown Critical Extension", critical_private=True)
    add("critical-extension-B-T", await sign(pdf, critical, "B-T", pki), critical, level="B-T",
        expected=CRITICAL_EXTENSION, description="signer's certificate carries an unknown critical extension "
        + PRIVATE_CRITICAL_OID.dotted_string)
    no_nr = pki.leaf("Corpus Signer without nonRepudiation", key_usage=_key_usage(signing=True))
    signed = await sign(pdf, no_nr, "B-T", pki, signer_key_usage=frozenset({"digital_signature"}))
    add("no-non-repudiation-B-T", signed, no_nr, level="B-T", expected=SIG_CONSTRAINTS, finding="key_usage",
        description="signer's keyUsage is digitalSignature only (no nonRepudiation)")
    server = pki.leaf("Corpus TLS Server", ekus=(ExtendedKeyUsageOID.SERVER_AUTH,))
    add("eku-server-auth-B-T", await sign(pdf, server, "B-T", pki), server, level="B-T",
        expected=SIG_CONSTRAINTS, finding="extended_key_usage",
        description="signer's extendedKeyUsage is serverAuth only")

    # revoked after the signature time-stamp: past signature validation keeps it valid (TS 119 102-1 5.5 / 5.6)
    late = pki.leaf("Corpus Signer Revoked Later")
    for level in ("B-T", "B-LT"):
        add(f"revoked-after-timestamp-{level}", await sign(pdf, late, level, pki), late, level=level,
            expected=PASSED, description="signer's certificate revoked a second after the signature time-stamp")
    revocation = _seconds(_now() + REVOCATION_DELAY)
    pki.revoke(late, revocation)
    # the responder reports a revocation once it is in the past (whole seconds, as OCSP and CRLs carry it)
    await asyncio.sleep((revocation - _now()).total_seconds() + 1.05)
    return {case.name: case for case in cases}


@contextmanager
def serving_pki() -> Iterator[CorpusPki]:
    """A fresh `CorpusPki` served on loopback (`serve`), for tests that sign their own documents."""
    holder: list[CorpusPki] = []
    with serve(holder) as base:
        holder.append(CorpusPki(base))
        yield holder[0]


class build_corpus:  # noqa: N801 - used as a context manager, like contextlib's
    """`async with build_corpus(directory) as corpus:` the PKI served on loopback and every case signed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stack = ExitStack()

    async def __aenter__(self) -> Corpus:
        pki = self._stack.enter_context(serving_pki())
        try:
            nss = nss_database(self.directory / "nss", pki)
            cases = await _build_cases(pki, self.directory)
        except BaseException:
            self._stack.close()
            raise
        return Corpus(pki=pki, directory=self.directory, nss=nss, cases=cases)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self._stack.close)
