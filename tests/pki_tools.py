"""Independent checks of what the built-in PKI produces: the real `openssl` command, `cryptography`'s parsers,
and requests and foreign CAs built with `cryptography` (not with the code under test)."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from api.deps import Services
from keys.models import IssuedCertificate
from keys.pki import PkiService
from keys.profiles import LegalPerson, NaturalPerson, Profile
from tests.replay import Replays

MALFORMED_REQUEST = bytes.fromhex("30030a0101")  # OCSPResponse { responseStatus malformedRequest (1) }
UNAUTHORIZED = bytes.fromhex("30030a0106")


def openssl(*args: str, input_: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["openssl", *args], capture_output=True, timeout=60, check=False, input=input_)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                         proc.stderr.decode(errors="replace"))
    if check and proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed ({proc.returncode}): {result.stderr}{result.stdout}")
    return result


def write_pem(path: Path, der: bytes) -> Path:
    path.write_text(x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode())
    return path


def verify_chain(directory: Path, root: Path, issuing: Path, cert: Path) -> str:
    """`openssl verify -CAfile root -untrusted issuing cert`; returns its output (raises unless OK)."""
    out = openssl("verify", "-CAfile", str(root), "-untrusted", str(issuing), str(cert)).stdout
    assert out.strip() == f"{cert}: OK", out
    return out


def x509_text(cert: Path) -> str:
    return openssl("x509", "-in", str(cert), "-noout", "-text", "-nameopt", "utf8,sep_comma_plus_space").stdout


def crl_text(der: bytes) -> str:
    return openssl("crl", "-inform", "DER", "-noout", "-text", input_=der).stdout


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None,
                 algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    """An OCSPRequest built by `cryptography` (SHA-1 CertID unless told otherwise)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())  # noqa: S303
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def foreign_ca(now: dt.datetime | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA that is not ours, and its key."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Somebody Else's CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def foreign_leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, serial: int) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))


PERSON = NaturalPerson.create(fin="5ABC12D", given_name="Aysel", surname="Məmmədova")


async def initialize_pki(services: Services, replays: Replays | None = None) -> PkiService:
    """What `acar init` does for the PKI in development: root, issuing CA, OCSP and TSA certificates.

    With `replays`, the rows the first run wrote are copied into later tests' databases (tests/replay.py)."""
    async def initialize() -> None:
        async with services.sessions() as session, session.begin():
            await services.pki.initialize(session, actor="test", create_hierarchy=True)

    if replays is None:
        await initialize()
    else:  # initialize's last step, forgetting the OCSP responder of the PKI before, is redone after a replay
        await replays.run(services, "pki", initialize, after=services.pki.forget)
    return services.pki


async def issue_certificate(services: Services, profile: Profile = Profile.AUTHENTICATION,
                            subject: NaturalPerson | LegalPerson = PERSON, days: int | None = None,
                            ) -> IssuedCertificate:
    """Issue a certificate for a fresh P-256 key through the issuing CA, in its own unit of work."""
    async with services.sessions() as session, session.begin():
        return await services.pki.ca.issue(session, profile=profile, subject=subject, days=days, actor="test",
                                           public_key=ec.generate_private_key(ec.SECP256R1()).public_key())


async def issue_x509(services: Services, profile: Profile = Profile.AUTHENTICATION) -> x509.Certificate:
    return x509.load_der_x509_certificate((await issue_certificate(services, profile)).der)
