"""A generated national ID-card PKI for the card-login tests, built with `cryptography`'s X.509 builder (never
with the code under test): a root CA, an "ID-card issuing CA", an OCSP responder certificate (id-kp-OCSPSigning
with id-pkix-ocsp-nocheck, RFC 6960 section 4.2.2.2) and the REAL `openssl ocsp` responder as a separate process
on a free port, plus an optional CRL served on loopback (tests.local_http) for the CRL fallback.

Card certificates follow the ETSI EN 319 412-2 natural-person authentication profile: subject C=AZ, givenName,
surname, serialNumber "PNOAZ-<FIN>" (ETSI EN 319 412-1 section 5.1.3), CN; keyUsage digitalSignature (critical);
extended key usage clientAuth; certificatePolicies; an AIA OCSP URL naming the responder. The tests keep each
card's private key to sign Web eID challenges as the extension would (`Card.token`).

Typical use (a fixture of the test module)::

    with idcard_pki(tmp_path) as pki:          # responder started, stopped on exit
        card = pki.card(fin="5ABC123", curve=ec.SECP384R1())
        revoked = pki.revoked_card()           # written to index.txt; the responder restarted
        policy = pki.policy()                  # CardPolicy: anchors = root, intermediates = issuing CA

`openssl ocsp -port` listens on every interface (it has no bind-address option); the URLs in the certificates
name 127.0.0.1 and nothing else talks to it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import select
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from idp.core.certificates import CardPolicy
from tests.local_http import LocalHttp, Route, free_port, local_http

CARD_POLICY = "1.3.6.1.4.1.99999.15.1.1"
"""The test ID-card authentication policy (a private-arc OID standing in for the national one)."""
ETSI_NCP_PLUS = "0.4.0.2042.1.2"
"""ETSI EN 319 411-1 NCP+ (itu-t(0) identified-organization(4) etsi(0) other-certificate-policies(2042) 1 2)."""
OCSP_NOCHECK = ObjectIdentifier("1.3.6.1.5.5.7.48.1.5")
APP_VERSION = "https://web-eid.eu/web-eid-app/releases/2.5.0+0"
WEBEID_FORMAT = "web-eid:1.0"

CardKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
SignerKey = CardKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
_PEM = serialization.Encoding.PEM
_DER = serialization.Encoding.DER
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _ca_name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "AZ"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Açar test ID-card PKI"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def key_usage(*, digital_signature: bool = False, content_commitment: bool = False, key_cert_sign: bool = False,
              crl_sign: bool = False, key_agreement: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=content_commitment,
                         key_encipherment=False, data_encipherment=False, key_agreement=key_agreement,
                         key_cert_sign=key_cert_sign, crl_sign=crl_sign, encipher_only=False, decipher_only=False)


def card_subject(*, serial_number: str | None, given_name: str = "Aygün", surname: str = "Məmmədova",
                 common_name: str | None = None, country: str = "AZ") -> x509.Name:
    """An ETSI EN 319 412-2 section 4.2.4 natural-person subject; `serial_number` None leaves it out."""
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, country),
                  x509.NameAttribute(NameOID.SURNAME, surname),
                  x509.NameAttribute(NameOID.GIVEN_NAME, given_name)]
    if serial_number is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    number = (serial_number or "").partition("-")[2]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME,
                                         common_name or f"{surname.upper()},{given_name.upper()},{number}"))
    return x509.Name(attributes)


# --- Web eID ------------------------------------------------------------------------------------------------------


def default_algorithm(key: CardKey) -> str:
    """What the Web eID app picks for the key: ES256/384/512 by curve, RS256 for an RSA card."""
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]


def sign_challenge(key: CardKey, certificate: x509.Certificate | bytes, *, origin: str, nonce: str,
                   algorithm: str | None = None, hashed_nonce: bytes | None = None) -> dict[str, Any]:
    """The Web eID authentication token (format web-eid:1.0) the extension returns for `nonce` on `origin`.

    Web eID system architecture, "Authentication token format": signature = sign(hash(origin) || hash(nonce)),
    hash = the algorithm's hash, the nonce hashed as its text (UTF-8 of the base64 string), the origin without a
    trailing slash; ECDSA signatures raw r||s (IEEE P1363, as JWA RFC 7518 section 3.4); the certificate standard
    base64 DER. `hashed_nonce` replaces hash(nonce) (to build wrongly made tokens)."""
    algorithm = algorithm or default_algorithm(key)
    digest = _HASHES[algorithm[2:]]()
    hash_name = digest.name.replace("-", "")
    data = hashlib.new(hash_name, origin.encode()).digest() + (
        hashed_nonce if hashed_nonce is not None else hashlib.new(hash_name, nonce.encode()).digest())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert algorithm.startswith("ES"), algorithm
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        size = (key.curve.key_size + 7) // 8
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    elif algorithm.startswith("PS"):
        signature = key.sign(data, padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size), digest)
    else:
        assert algorithm.startswith("RS"), algorithm
        signature = key.sign(data, padding.PKCS1v15(), digest)
    der = certificate if isinstance(certificate, bytes) else certificate.public_bytes(_DER)
    return {"format": WEBEID_FORMAT, "algorithm": algorithm,
            "unverifiedCertificate": base64.b64encode(der).decode(),
            "signature": base64.b64encode(signature).decode(), "appVersion": APP_VERSION}


# --- the PKI -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    """A card certificate and the card's private key (kept by the test to answer Web eID challenges)."""

    certificate: x509.Certificate
    key: CardKey
    fin: str | None = None

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(_DER)

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(_PEM).decode()

    @property
    def serial_number(self) -> int:
        return self.certificate.serial_number

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    def token(self, *, origin: str, nonce: str, algorithm: str | None = None) -> dict[str, Any]:
        """The Web eID token this card's extension would send for `nonce` on `origin`."""
        return sign_challenge(self.key, self.certificate, origin=origin, nonce=nonce, algorithm=algorithm)

    def write(self, directory: Path, name: str = "card") -> tuple[Path, Path]:
        """The certificate and unencrypted PKCS#8 key as PEM files (for httpx/ssl client authentication)."""
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        cert.write_bytes(self.certificate.public_bytes(_PEM))
        key.write_bytes(self.key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert, key


@dataclass(frozen=True)
class TrustFiles:
    anchors: Path        # the root CA (PEM)
    intermediates: Path  # the ID-card issuing CA (PEM)


@dataclass
class _Ca:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(_DER)


def _self_signed_ca(cn: str, *, now: dt.datetime) -> _Ca:
    key = ec.generate_private_key(ec.SECP384R1())
    name = _ca_name(cn)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return _Ca(certificate, key)


def _sub_ca(cn: str, parent: _Ca, *, now: dt.datetime, crl_url: str | None = None) -> _Ca:
    key = ec.generate_private_key(ec.SECP384R1())
    builder = (
        x509.CertificateBuilder().subject_name(_ca_name(cn)).issuer_name(parent.certificate.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=20)).not_valid_after(now + dt.timedelta(days=1825))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), critical=False)
    )
    if crl_url is not None:
        builder = builder.add_extension(_crl_points(crl_url), critical=False)
    return _Ca(builder.sign(parent.key, hashes.SHA384()), key)


def _crl_points(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(url)],
                                                              relative_name=None, reasons=None, crl_issuer=None)])


def _ocsp_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%y%m%d%H%M%SZ")


def _serial_hex(serial: int) -> str:
    text = f"{serial:X}"
    return text if len(text) % 2 == 0 else "0" + text


@dataclass
class _Issued:
    certificate: x509.Certificate
    revoked_at: dt.datetime | None = None
    reason: x509.ReasonFlags = x509.ReasonFlags.key_compromise


def _drain(stream: Any) -> None:
    try:
        while stream.read(65536):
            pass
    except (OSError, ValueError):  # closed by stop()
        pass


class OcspResponder:
    """`openssl ocsp` answering for the issuing CA on 127.0.0.1:`port`, as a real process: the index is written
    before each start (`restart` after a revocation); `stop` leaves the port dead (connection refused)."""

    def __init__(self, directory: Path, *, port: int, ca: Path, rsigner: Path, rkey: Path,
                 index: Path, ndays: int = 1, nmin: int | None = None) -> None:
        self.directory = directory
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._ca, self._rsigner, self._rkey, self._index = ca, rsigner, rkey, index
        self.ndays, self.nmin = ndays, nmin
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        validity = ["-nmin", str(self.nmin)] if self.nmin is not None else ["-ndays", str(self.ndays)]
        self._log = (self.directory / "ocsp.log").open("ab")
        process = subprocess.Popen(
            ["openssl", "ocsp", "-index", str(self._index), "-port", str(self.port), "-rsigner", str(self._rsigner),
             "-rkey", str(self._rkey), "-CA", str(self._ca), *validity, "-ignore_err"],
            stdout=subprocess.PIPE, stderr=self._log, cwd=self.directory)
        self._process = process
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 10)  # it prints "ACCEPT [::]:port PID=..." when bound
        line = process.stdout.readline() if ready else b""
        if not line.startswith(b"ACCEPT"):
            self.stop()
            raise RuntimeError(f"openssl ocsp did not start on port {self.port}: {line!r} "
                               f"{(self.directory / 'ocsp.log').read_text(errors='replace')[-500:]}")
        # anything it prints later is drained, so a full pipe can never block the responder
        threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
        self.starts += 1

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> OcspResponder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class IdCardPki:
    """Root -> ID-card issuing CA -> cards, the OCSP responder's certificate and process, an optional CRL."""

    directory: Path
    root: _Ca
    issuing: _Ca
    responder_certificate: x509.Certificate
    responder_key: ec.EllipticCurvePrivateKey
    responder: OcspResponder
    crl_http: LocalHttp | None = None
    unknown_root: _Ca | None = None
    unknown_issuing: _Ca | None = None
    issued: dict[int, _Issued] = field(default_factory=dict)

    CRL_PATH = "/idcard-ca.crl"

    # --- what a relying party configures ---------------------------------------------------------------------

    @property
    def ocsp_url(self) -> str:
        return self.responder.url

    @property
    def crl_url(self) -> str | None:
        return None if self.crl_http is None else self.crl_http.base + self.CRL_PATH

    @property
    def anchors(self) -> tuple[bytes, ...]:
        return (self.root.der,)

    @property
    def intermediates(self) -> tuple[bytes, ...]:
        return (self.issuing.der,)

    @property
    def root_certificate(self) -> x509.Certificate:
        return self.root.certificate

    @property
    def issuing_certificate(self) -> x509.Certificate:
        return self.issuing.certificate

    def write_trust(self, directory: Path | None = None) -> TrustFiles:
        """The anchors (root) and intermediates (issuing CA) as PEM files, what ACAR_IDCARD_TRUST_ANCHORS and
        ACAR_IDCARD_INTERMEDIATES name."""
        directory = directory or self.directory
        files = TrustFiles(anchors=directory / "idcard-anchors.pem",
                           intermediates=directory / "idcard-intermediates.pem")
        files.anchors.write_bytes(self.root.certificate.public_bytes(_PEM))
        files.intermediates.write_bytes(self.issuing.certificate.public_bytes(_PEM))
        return files

    def policy(self, **overrides: Any) -> CardPolicy:
        """idp.core.certificates.CardPolicy for this PKI: anchors = root, intermediates = issuing CA, the card
        policy required; keyword arguments override (soft_fail, ocsp_url, cache_seconds, fetch_timeout, ...)."""
        values: dict[str, Any] = {"anchors": self.anchors, "intermediates": self.intermediates,
                                  "required_policies": frozenset({CARD_POLICY}), "fetch_timeout": 5.0}
        values.update(overrides)
        return CardPolicy(**values)

    # --- cards ---------------------------------------------------------------------------------------------------

    def card(
        self,
        fin: str = "5ABC123",
        *,
        curve: ec.EllipticCurve | None = None,
        rsa_bits: int | None = None,
        serial_number: str | None = "",
        given_name: str = "Aygün",
        surname: str = "Məmmədova",
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        usage: x509.KeyUsage | None = None,
        with_key_usage: bool = True,
        ekus: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
        policies: Sequence[str] = (CARD_POLICY, ETSI_NCP_PLUS),
        ocsp: bool = True,
        ocsp_url: str | None = None,
        crl: bool = False,
        issuer: str = "issuing",
    ) -> Card:
        """A card authentication certificate on a fresh key (P-256 unless `curve`, RSA when `rsa_bits`).

        `serial_number` "" means "PNOAZ-<fin>", None leaves it out; `usage` None: keyUsage digitalSignature
        (`with_key_usage` False: no keyUsage extension); `ekus` None: no extendedKeyUsage extension; `ocsp_url`
        replaces the responder's URL in the AIA (with `ocsp`); `crl` names the served CRL as distribution point;
        `issuer` is "issuing" (the trusted CA), "unknown" (a CA under a root nobody trusts), "forged" (a CA with
        the trusted issuing CA's name but another key), "forged-ed25519" / "forged-ed448" (the trusted issuing CA's
        name and key identifier, signed by an EdDSA key: a signature algorithm that does not fit the CA's EC key)
        or "self" (self-signed)."""
        now = _now()
        key: CardKey = (rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits) if rsa_bits
                        else ec.generate_private_key(curve or ec.SECP256R1()))
        subject = card_subject(serial_number=f"PNOAZ-{fin}" if serial_number == "" else serial_number,
                               given_name=given_name, surname=surname)
        signer, issuer_name = self._signer(issuer, key, subject)
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(days=1))
            .not_valid_after(not_after or now + dt.timedelta(days=365 * 5))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.issuing.key.public_key() if issuer.startswith("forged-ed") else signer.public_key()),
                critical=False)
        )
        if with_key_usage:
            builder = builder.add_extension(usage or key_usage(digital_signature=True), critical=True)
        if ekus is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
        if policies:
            builder = builder.add_extension(x509.CertificatePolicies(
                [x509.PolicyInformation(ObjectIdentifier(oid), None) for oid in policies]), critical=False)
        if ocsp:
            builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url or self.ocsp_url))]),
                critical=False)
        if crl:
            if self.crl_url is None:
                raise ValueError("this PKI serves no CRL: idcard_pki(..., crl=True)")
            builder = builder.add_extension(_crl_points(self.crl_url), critical=False)
        eddsa = isinstance(signer, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        certificate = builder.sign(signer, None if eddsa else hashes.SHA384() if not rsa_bits else hashes.SHA256())
        if issuer == "issuing":
            self.issued[certificate.serial_number] = _Issued(certificate)
            self._publish()
            if self.responder.running:  # it reads index.txt when it starts (a reload by mtime misses fast writes)
                self.responder.restart()
        return Card(certificate, key, fin if serial_number == "" else None)

    def _signer(self, issuer: str, key: CardKey, subject: x509.Name) -> tuple[SignerKey, x509.Name]:
        if issuer == "issuing":
            return self.issuing.key, self.issuing.certificate.subject
        if issuer == "forged-ed25519":
            return ed25519.Ed25519PrivateKey.generate(), self.issuing.certificate.subject
        if issuer == "forged-ed448":
            return ed448.Ed448PrivateKey.generate(), self.issuing.certificate.subject
        if issuer == "self":
            return key, subject
        now = _now()
        if self.unknown_root is None:
            self.unknown_root = _self_signed_ca("Unknown Root CA", now=now)
            self.unknown_issuing = _sub_ca("Unknown ID-card CA", self.unknown_root, now=now)
        assert self.unknown_issuing is not None
        if issuer == "unknown":
            return self.unknown_issuing.key, self.unknown_issuing.certificate.subject
        if issuer == "forged":
            return self.unknown_issuing.key, self.issuing.certificate.subject
        raise ValueError(f"unknown issuer kind {issuer!r}")

    # the variants the negative tests need -----------------------------------------------------------------------

    def expired_card(self, **kw: Any) -> Card:
        now = _now()
        return self.card(not_before=now - dt.timedelta(days=800), not_after=now - dt.timedelta(days=2), **kw)

    def not_yet_valid_card(self, **kw: Any) -> Card:
        now = _now()
        return self.card(not_before=now + dt.timedelta(days=2), not_after=now + dt.timedelta(days=800), **kw)

    def revoked_card(self, **kw: Any) -> Card:
        card = self.card(**kw)
        self.revoke(card)
        return card

    def non_repudiation_card(self, **kw: Any) -> Card:
        """keyUsage nonRepudiation only: a signing certificate, not an authentication one."""
        return self.card(usage=key_usage(content_commitment=True), **kw)

    def email_protection_card(self, **kw: Any) -> Card:
        """EKU emailProtection only."""
        return self.card(ekus=(ExtendedKeyUsageOID.EMAIL_PROTECTION,), **kw)

    def self_signed_card(self, **kw: Any) -> Card:
        return self.card(issuer="self", ocsp=False, **kw)

    def unknown_ca_card(self, **kw: Any) -> Card:
        return self.card(issuer="unknown", **kw)

    def forged_issuer_card(self, **kw: Any) -> Card:
        """Names the trusted issuing CA as issuer but is signed by another key."""
        return self.card(issuer="forged", **kw)

    def no_policy_card(self, **kw: Any) -> Card:
        """Only the ETSI NCP+ policy, not the ID-card policy."""
        return self.card(policies=(ETSI_NCP_PLUS,), **kw)

    def foreign_card(self, kind: str = "IDC", number: str = "AZ-AA1234567", **kw: Any) -> Card:
        """An IDCAZ-/PASAZ- style identifier (a foreign resident's card): `kind` + `number`."""
        return self.card(serial_number=f"{kind}{number}", **kw)

    def malformed_serial_card(self, serial_number: str = "PNOAZ5ABC123", **kw: Any) -> Card:
        return self.card(serial_number=serial_number, **kw)

    # --- revocation ----------------------------------------------------------------------------------------------

    def revoke(self, card: Card, *, reason: x509.ReasonFlags = x509.ReasonFlags.key_compromise,
               restart: bool = True) -> None:
        """Mark `card` revoked in index.txt and the CRL; a running responder is restarted to read it."""
        issued = self.issued[card.serial_number]
        issued.revoked_at = _now() - dt.timedelta(minutes=1)
        issued.reason = reason
        self._publish()
        if restart and self.responder.running:
            self.responder.restart()

    def forget(self, card: Card) -> None:
        """Drop `card` from index.txt (the responder then answers "unknown" for it, RFC 6960 section 2.2)."""
        del self.issued[card.serial_number]
        self._publish()
        if self.responder.running:
            self.responder.restart()

    def _publish(self) -> None:
        """index.txt (openssl ca's database format, read by `openssl ocsp -index`) and the CRL."""
        lines = []
        for serial, issued in self.issued.items():
            expiry = _ocsp_time(issued.certificate.not_valid_after_utc)
            subject = "/" + "/".join(a.rfc4514_string() for a in issued.certificate.subject)
            if issued.revoked_at is None:
                lines.append(f"V\t{expiry}\t\t{_serial_hex(serial)}\tunknown\t{subject}")
            else:
                revoked = f"{_ocsp_time(issued.revoked_at)},{_OPENSSL_REASONS[issued.reason]}"
                lines.append(f"R\t{expiry}\t{revoked}\t{_serial_hex(serial)}\tunknown\t{subject}")
        index = self.directory / "index.txt"
        index.write_text("".join(line + "\n" for line in lines))
        if self.crl_http is not None:
            self.crl_http.routes[self.CRL_PATH] = Route(body=self.crl(),
                                                        headers={"Content-Type": "application/pkix-crl"})

    def crl(self, *, next_update: dt.timedelta = dt.timedelta(days=1)) -> bytes:
        """The issuing CA's CRL (RFC 5280 section 5) of the revoked cards, DER."""
        now = _now()
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.issuing.certificate.subject)
                   .last_update(now - dt.timedelta(minutes=5)).next_update(now + next_update)
                   .add_extension(x509.CRLNumber(int(time.time())), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.issuing.key.public_key()),
                                  critical=False))
        for serial, issued in self.issued.items():
            if issued.revoked_at is not None:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(issued.revoked_at)
                    .add_extension(x509.CRLReason(issued.reason), critical=False).build())
        return builder.sign(self.issuing.key, hashes.SHA384()).public_bytes(_DER)


_OPENSSL_REASONS = {
    x509.ReasonFlags.unspecified: "unspecified", x509.ReasonFlags.key_compromise: "keyCompromise",
    x509.ReasonFlags.ca_compromise: "CACompromise", x509.ReasonFlags.affiliation_changed: "affiliationChanged",
    x509.ReasonFlags.superseded: "superseded", x509.ReasonFlags.cessation_of_operation: "cessationOfOperation",
    x509.ReasonFlags.certificate_hold: "certificateHold",
}


@contextmanager
def idcard_pki(directory: Path, *, crl: bool = False, start: bool = True, nmin: int | None = None,
               issuing_crl_url: str | None = None) -> Iterator[IdCardPki]:
    """Build the PKI under `directory` and run its OCSP responder (unless `start` is False) until exit; `crl`
    also serves the issuing CA's CRL on loopback (cards issued with `crl=True` name it); `nmin` makes the
    responder's nextUpdate `nmin` minutes ahead instead of one day; `issuing_crl_url` gives the issuing CA's own
    certificate a CRL distribution point (the root's CRL; nothing serves it unless the test does)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = _now()
    root = _self_signed_ca("Test AZ ID-card Root CA", now=now)
    issuing = _sub_ca("Test AZ ID-card Issuing CA", root, now=now, crl_url=issuing_crl_url)
    responder_key = ec.generate_private_key(ec.SECP256R1())
    responder_certificate = (
        x509.CertificateBuilder().subject_name(_ca_name("Test AZ ID-card OCSP Responder"))
        .issuer_name(issuing.certificate.subject).public_key(responder_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.UnrecognizedExtension(OCSP_NOCHECK, b"\x05\x00"), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuing.key.public_key()), critical=False)
        .sign(issuing.key, hashes.SHA384())
    )
    files = {"issuing": directory / "issuing.pem", "rsigner": directory / "ocsp.pem", "rkey": directory / "ocsp.key",
             "index": directory / "index.txt"}
    files["issuing"].write_bytes(issuing.certificate.public_bytes(_PEM))
    files["rsigner"].write_bytes(responder_certificate.public_bytes(_PEM))
    files["rkey"].write_bytes(responder_key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    files["index"].write_text("")
    (directory / "index.txt.attr").write_text("unique_subject = no\n")
    responder = OcspResponder(directory, port=free_port(), ca=files["issuing"], rsigner=files["rsigner"],
                              rkey=files["rkey"], index=files["index"], nmin=nmin)
    with ExitStack() as stack:
        crl_http = stack.enter_context(local_http()) if crl else None
        pki = IdCardPki(directory=directory, root=root, issuing=issuing, responder_certificate=responder_certificate,
                        responder_key=responder_key, responder=responder, crl_http=crl_http)
        pki._publish()
        if start:
            responder.start()
        stack.callback(responder.stop)
        yield pki


def token_json(token: dict[str, Any]) -> str:
    return json.dumps(token, separators=(",", ":"))
