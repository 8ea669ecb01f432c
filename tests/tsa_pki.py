"""A throwaway PKI for time-stamp tests: root -> issuing CA -> TSA, built with `cryptography`'s X.509 builder
(independent of the code under test), plus helpers that drive the real `openssl ts` and parse replies."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keys.interfaces import CertificateStatus, KeyHandle
from keys.x509 import serial_to_hex

POLICY = "1.3.6.1.4.1.99999.1.2"
ISSUER = "test-issuing"
"""The name the TSA provider looks the test PKI's TSA certificate up under (CertificateRecords)."""
_PEM = serialization.Encoding.PEM
_DER = serialization.Encoding.DER


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Açar test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)


@dataclass(frozen=True)
class TsaTestPki:
    """The certificates of the test PKI and the TSA's key handle; `credentials` feeds TimestampAuthority."""

    root: x509.Certificate
    issuing: x509.Certificate
    tsa: x509.Certificate
    handle: KeyHandle

    @property
    def certificate(self) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(self.tsa.public_bytes(_DER))

    @property
    def chain(self) -> tuple[asn1_x509.Certificate, ...]:
        return (asn1_x509.Certificate.load(self.issuing.public_bytes(_DER)),)

    @property
    def serial_hex(self) -> str:
        return serial_to_hex(self.tsa.serial_number)

    def write(self, directory: Path) -> PkiFiles:
        files = PkiFiles(root=directory / "root.pem", untrusted=directory / "untrusted.pem",
                             tsa=directory / "tsa.pem")
        files.root.write_bytes(self.root.public_bytes(_PEM))
        files.untrusted.write_bytes(self.tsa.public_bytes(_PEM) + self.issuing.public_bytes(_PEM))
        files.tsa.write_bytes(self.tsa.public_bytes(_PEM))
        return files


@dataclass(frozen=True)
class PkiFiles:
    root: Path
    untrusted: Path  # the TSA certificate and the issuing CA: what a token without certificates lacks
    tsa: Path


def build_test_pki(
    handle: KeyHandle,
    *,
    ekus: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.TIME_STAMPING,),
    eku_critical: bool = True,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> TsaTestPki:
    """A root and an issuing CA (fresh P-256 keys) and a TSA certificate for `handle`'s public key."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    root_key = ec.generate_private_key(ec.SECP256R1())
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder().subject_name(_name("Test Root")).issuer_name(_name("Test Root"))
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    issuing = (
        x509.CertificateBuilder().subject_name(_name("Test Issuing CA")).issuer_name(root.subject)
        .public_key(issuing_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(issuing_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    public_key = handle.public_key()
    assert isinstance(public_key, CertificatePublicKeyTypes)  # narrows the type for the builder
    tsa = (
        x509.CertificateBuilder().subject_name(_name("Test Time-Stamping Authority")).issuer_name(issuing.subject)
        .public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(hours=1))
        .not_valid_after(not_after or now + dt.timedelta(days=10))
        .add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=eku_critical)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuing_key.public_key()), critical=False)
        .sign(issuing_key, hashes.SHA256())
    )
    return TsaTestPki(root=root, issuing=issuing, tsa=tsa, handle=handle)


class CertificateRecords:
    """A CertificateStatusSource for test PKIs: what the issuing CA's certificates table would say about them.

    Only the certificates `issue` recorded are known (under ISSUER); `revoke` marks one revoked.
    """

    def __init__(self, *issued: TsaTestPki) -> None:
        self._statuses: dict[str, CertificateStatus] = {}
        self.lookups = 0
        for pki in issued:
            self.issue(pki)

    def issue(self, pki: TsaTestPki) -> None:
        self._statuses[pki.serial_hex] = CertificateStatus()

    def revoke(self, pki: TsaTestPki) -> None:
        self._statuses[pki.serial_hex] = CertificateStatus(revoked_at=dt.datetime.now(dt.UTC), reason="keyCompromise")

    async def lookup(self, issuer: str, serials: Sequence[str]) -> dict[str, CertificateStatus]:
        self.lookups += 1
        return {s: self._statuses[s] for s in serials if issuer == ISSUER and s in self._statuses}

    async def close(self) -> None:
        return None


# --- openssl and reply parsing ---------------------------------------------------------------------------------


def openssl(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed: {proc.stdout}{proc.stderr}")
    return proc


def openssl_query(directory: Path, data: Path, *options: str, name: str = "req.tsq") -> bytes:
    """`openssl ts -query` over `data`; returns the DER TimeStampReq."""
    out = directory / name
    openssl("ts", "-query", "-data", data, *options, "-out", out)
    return out.read_bytes()


class TimeStampResp(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """RFC 3161 TimeStampResp with the token OPTIONAL (asn1crypto's own class requires it)."""

    _fields = [  # noqa: RUF012 - asn1crypto's declaration style
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


def parse_reply(der: bytes) -> TimeStampResp:
    reply = TimeStampResp.load(der, strict=True)
    reply.native  # noqa: B018 - parses every field: a malformed reply fails here
    return reply


def tst_info(reply: TimeStampResp) -> tsp.TSTInfo:
    return reply["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
