"""X.509 building blocks on asn1crypto, signed through `KeyHandle.sign` (so a CA key may live on an HSM).

`cryptography`'s certificate, CRL and OCSP builders need the private key object; a `KeyHandle` never gives
it out. So the to-be-signed structures are built with asn1crypto, their DER is signed by the handle
(ECDSA signatures come back DER-encoded, RSA as PKCS#1 v1.5, Ed25519 as the raw 64 bytes: exactly the
BIT STRING contents RFC 5280, RFC 5758 and RFC 8410 want) and the signed structure is assembled here.

- RFC 5280 section 4.1.2.2: serial numbers are positive, at most 20 octets; ours are random 159-bit numbers.
- RFC 5280 section 4.1.2.5: validity dates through 2049 as UTCTime, from 2050 as GeneralizedTime, whole seconds.
- RFC 5280 section 4.2.1.2: key identifiers are the SHA-1 of the subjectPublicKey BIT STRING value.
- RFC 2986 (PKCS#10): a CSR is accepted only when its self-signature verifies.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from asn1crypto import algos, core, x509
from asn1crypto import keys as asn1_keys
from cryptography import x509 as cx509
from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from keys.errors import InvalidCertificateRequest, UnsupportedAlgorithm
from keys.interfaces import HashName, KeyHandle, KeyType

SERIAL_BITS: Final = 159
"""Random serial numbers of exactly this many bits: positive and 20 octets in DER (RFC 5280 section 4.1.2.2)."""

_UTC_TIME_LIMIT = dt.datetime(2050, 1, 1, tzinfo=dt.UTC)
_HEX_SERIAL = re.compile(r"^[0-9a-f]{1,40}$")

SIGNATURE_ALGORITHMS: Final[dict[KeyType, tuple[HashName, str]]] = {
    # The digest and the asn1crypto signature algorithm name per key type, for X.509 (certificates, CRLs,
    # OCSP) and CMS (keys.tsa): RFC 5758 (ECDSA), RFC 4055 (RSA PKCS#1 v1.5), RFC 8410 and RFC 8419 (Ed25519).
    "EC-P256": ("sha256", "sha256_ecdsa"),
    "EC-P384": ("sha384", "sha384_ecdsa"),
    "RSA-2048": ("sha256", "sha256_rsa"),
    "RSA-3072": ("sha256", "sha256_rsa"),
    "Ed25519": ("sha512", "ed25519"),  # the hash is not used: Ed25519 signs the message itself
}

# Subject keys a certificate may certify (the subscriber's key, not ours): RFC 5480 curves and RSA >= 2048.
_SUBJECT_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_RSA_MIN_BITS = 2048
_RSA_MAX_BITS = 8192


@dataclass(frozen=True, slots=True)
class SignatureScheme:
    """How a key signs X.509 structures: the digest it signs with and the AlgorithmIdentifier naming it."""

    hash_name: HashName
    algorithm: str

    def identifier(self) -> algos.SignedDigestAlgorithm:
        """The AlgorithmIdentifier; parameters are NULL for RSA and absent for ECDSA and Ed25519 (RFC 5758 3.2)."""
        if self.algorithm.endswith("_rsa"):
            return algos.SignedDigestAlgorithm({"algorithm": self.algorithm, "parameters": core.Null()})
        return algos.SignedDigestAlgorithm({"algorithm": self.algorithm})


def signature_scheme(key_type: KeyType) -> SignatureScheme:
    """The signature scheme our CA, CRL and OCSP signatures use with a key of this type."""
    try:
        hash_name, algorithm = SIGNATURE_ALGORITHMS[key_type]
    except KeyError:
        raise UnsupportedAlgorithm(f"no X.509 signature algorithm for {key_type} keys") from None
    return SignatureScheme(hash_name, algorithm)


async def sign_tbs(handle: KeyHandle, tbs: Any, *, algorithm_field: str | None = None,
                   ) -> tuple[algos.SignedDigestAlgorithm, bytes]:
    """Sign the DER of a to-be-signed structure with the handle; return (signatureAlgorithm, signature).

    `algorithm_field` names the field inside the structure that repeats the signature algorithm
    (TBSCertificate.signature, TBSCertList.signature); it is set before the DER is signed.
    """
    scheme = signature_scheme(handle.key_type)
    algorithm = scheme.identifier()
    if algorithm_field is not None:
        tbs[algorithm_field] = algorithm
    return algorithm, await handle.sign(bytes(tbs.dump()), scheme.hash_name)


def random_serial() -> int:
    """A random positive serial of exactly SERIAL_BITS bits (158 random bits, the top one set)."""
    return secrets.randbits(SERIAL_BITS - 1) | (1 << (SERIAL_BITS - 1))


def serial_to_hex(serial: int) -> str:
    """The canonical text form of a serial: lower-case hex without leading zeros (how we store and print it)."""
    return format(serial, "x")


def parse_serial(text: str) -> str:
    """Accept a hex serial as people type it (`0x` prefix, colons, upper case) and return the canonical form."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "").lstrip("0") or "0"
    if not _HEX_SERIAL.fullmatch(cleaned) or cleaned == "0":
        raise InvalidCertificateRequest(f"the serial number must be a positive hexadecimal number (got {text!r})")
    return cleaned


def x509_time(value: dt.datetime) -> x509.Time:
    """RFC 5280 section 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds in UTC."""
    value = value.astimezone(dt.UTC).replace(microsecond=0)
    if value < _UTC_TIME_LIMIT:
        return x509.Time(name="utc_time", value=x509.UTCTime(value))
    return x509.Time(name="general_time", value=x509.GeneralizedTime(value))


def build_name(attributes: Sequence[tuple[str, str]]) -> x509.Name:
    """A distinguished name with one attribute per RDN, in the given order.

    countryName and serialNumber are PrintableString (X.520, RFC 5280 appendix A); every other attribute is
    a UTF8String DirectoryString, as RFC 5280 section 4.1.2.4 requires of new certificates.
    """
    rdns = []
    for name, value in attributes:
        if name in ("country_name", "serial_number"):
            encoded: Any = core.PrintableString(value)
        else:
            encoded = x509.DirectoryString(name="utf8_string", value=value)
        rdns.append(x509.RelativeDistinguishedName([x509.NameTypeAndValue({"type": name, "value": encoded})]))
    return x509.Name(name="", value=x509.RDNSequence(rdns))


def public_key_info(public_key: PublicKeyTypes) -> Any:
    """The SubjectPublicKeyInfo (asn1crypto keys.PublicKeyInfo) of a `cryptography` public key."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return asn1_keys.PublicKeyInfo.load(der)


def key_identifier(spki: Any) -> bytes:
    """RFC 5280 section 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING value."""
    return hashlib.sha1(subject_public_key_bits(spki), usedforsecurity=False).digest()


def subject_public_key_bits(spki: Any) -> bytes:
    """The value of the subjectPublicKey BIT STRING (without tag, length and the unused-bits octet)."""
    return bytes(spki["public_key"].contents[1:])


def certificate_public_key(certificate: Any) -> PublicKeyTypes:
    """The public key a certificate certifies, as a `cryptography` object."""
    return serialization.load_der_public_key(bytes(certificate.public_key.dump()))


def same_public_key(a: PublicKeyTypes, b: PublicKeyTypes) -> bool:
    """True when both are the same key (compared as DER SubjectPublicKeyInfo)."""
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return a.public_bytes(*fmt) == b.public_bytes(*fmt)


def check_subject_key(public_key: PublicKeyTypes) -> PublicKeyTypes:
    """Refuse subscriber keys we do not certify: EC on P-256/P-384/P-521, RSA 2048-8192 bits, or Ed25519."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, _SUBJECT_CURVES):
            return public_key
        raise InvalidCertificateRequest(f"EC keys must be on P-256, P-384 or P-521, not {public_key.curve.name}")
    if isinstance(public_key, rsa.RSAPublicKey):
        if not _RSA_MIN_BITS <= public_key.key_size <= _RSA_MAX_BITS:
            raise InvalidCertificateRequest(
                f"RSA keys must have {_RSA_MIN_BITS} to {_RSA_MAX_BITS} bits, not {public_key.key_size}")
        return public_key
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return public_key
    raise InvalidCertificateRequest(f"unsupported subject key type {type(public_key).__name__}")


def subject_key_from_pem(data: bytes) -> PublicKeyTypes:
    """The subscriber key from a PEM SubjectPublicKeyInfo ("-----BEGIN PUBLIC KEY-----")."""
    try:
        key = serialization.load_pem_public_key(data)
    except CryptographyUnsupportedAlgorithm as exc:  # e.g. an EC key on a curve OpenSSL does not know
        raise InvalidCertificateRequest(f"the public key's algorithm is not supported: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise InvalidCertificateRequest(f"the public key is not a PEM SubjectPublicKeyInfo: {exc}") from None
    return check_subject_key(key)


def subject_key_from_csr(data: bytes) -> PublicKeyTypes:
    """The subscriber key from a PKCS#10 CSR (PEM or DER) whose self-signature must verify (RFC 2986).

    The CSR proves possession of the private key; its subject is ignored, the profile builds the subject.
    """
    try:
        csr = cx509.load_pem_x509_csr(data) if data.lstrip().startswith(b"-----") else cx509.load_der_x509_csr(data)
    except ValueError as exc:
        raise InvalidCertificateRequest(f"the CSR cannot be read: {exc}") from None
    try:
        valid = csr.is_signature_valid
        key = csr.public_key()
    except (ValueError, TypeError, cx509.UnsupportedGeneralNameType, CryptographyUnsupportedAlgorithm) as exc:
        raise InvalidCertificateRequest(f"the CSR cannot be checked: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - anything else cryptography raises on an exotic CSR is a refusal too
        raise InvalidCertificateRequest(f"the CSR cannot be checked: {type(exc).__name__}") from None
    if not valid:
        raise InvalidCertificateRequest("the CSR signature does not verify (no proof of possession)")
    return check_subject_key(key)


async def assemble_certificate(handle: KeyHandle, tbs: x509.TbsCertificate) -> x509.Certificate:
    """Sign a TBSCertificate with the issuer's key handle (RFC 5280 section 4.1.1)."""
    algorithm, signature = await sign_tbs(handle, tbs, algorithm_field="signature")
    return x509.Certificate({"tbs_certificate": tbs, "signature_algorithm": algorithm, "signature_value": signature})


def to_pem(der: bytes, label: str = "CERTIFICATE") -> str:
    """PEM armour (RFC 7468) around DER bytes."""
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode("ascii"), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"
