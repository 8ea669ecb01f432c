"""The Web eID authentication token (format "web-eid:1"): the browser-extension protocol national ID cards use
instead of TLS client authentication (Web eID system architecture, https://github.com/web-eid/web-eid-system-
architecture-doc, "Authentication token format" and "Authentication token validation").

The server issues a nonce (`new_nonce`: 32 random bytes, standard base64, single use and short-lived: the store's
job, not this module's); the extension has the card sign it and returns

    {"format": "web-eid:1.0", "algorithm": "ES384", "unverifiedCertificate": "<base64 DER>",
     "signature": "<base64>", "appVersion": "https://web-eid.eu/web-eid-app/releases/2.5.0+0"}

The details implementations get wrong, each a decision here:
- The signed data is hash(origin) || hash(nonce), and the signature algorithm hashes that concatenation again:
  `hash` is the algorithm's own hash (SHA-384 for ES384 and PS384/RS384, ...), not always SHA-256.
- The nonce is hashed as the string it is (UTF-8 of the base64 text), not base64-decoded first.
- The origin is the web origin (RFC 6454: scheme, host, port if not default) with no trailing slash and no path.
- ECDSA signatures are raw r||s (IEEE P1363, as JWA RFC 7518 section 3.4), each half the curve's byte length;
  `cryptography` wants DER, so they are converted (a signature of any other length is refused).
- unverifiedCertificate and signature are standard base64 (RFC 4648 section 4) with padding, decoded strictly.
- format must be "web-eid:1" or "web-eid:1.<minor>" (the token validation library checks the "web-eid:1" prefix;
  "web-eid:10" is refused here).
- The algorithm must fit the certificate's key: ES256/ES384/ES512 an EC key on P-256/P-384/P-521 (RFC 7518
  section 3.4), PS*/RS* an RSA key of at least 2048 bits (RFC 7518 sections 3.3 and 3.5; PSS salt = hash length).
- Field sizes are bounded before decoding.

`WebEidVerifier.verify` checks the signature first (no network), then the certificate with the
CertificateVerifier (path, usage, revocation, holder: idp.core.certificates).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import re
import secrets
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from idp.core.certificates import MAX_CERTIFICATE_BYTES, CertificateVerifier, VerifiedCertificate
from idp.core.errors import CertificateMalformed, WebEidSignatureInvalid, WebEidTokenMalformed

NONCE_BYTES: Final = 32
"""Web eID: the challenge nonce has at least 256 bits of entropy."""

FORMAT_RE: Final = re.compile(r"web-eid:1(?:\.[0-9]{1,4})?")
MAX_FORMAT: Final = 32
MAX_ALGORITHM: Final = 8
MAX_APP_VERSION: Final = 256
MAX_CERTIFICATE_BASE64: Final = (MAX_CERTIFICATE_BYTES + 2) // 3 * 4
MAX_SIGNATURE_BASE64: Final = 1368
"""A 8192-bit RSA signature (1024 bytes) in base64; P-521 raw r||s is 132 bytes."""
MAX_FIELDS: Final = 16
MIN_RSA_BITS: Final = 2048

_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512,
}
_DIGESTS: Final[dict[str, Callable[[bytes], Any]]] = {
    "256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512,
}
KEY_CACHE_ENTRIES: Final = 1024
"""Certificates whose parsed public key is kept (a returning card skips parsing its certificate again)."""
_CURVES: Final[dict[str, str]] = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
ALGORITHMS: Final = frozenset({"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512"})
"""The token algorithms Web eID defines (JWA names, RFC 7518 section 3.1)."""


def new_nonce() -> str:
    """A fresh challenge nonce: standard base64 (padded) of NONCE_BYTES random bytes, 44 characters."""
    return base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode("ascii")


@dataclass(frozen=True, slots=True)
class WebEidToken:
    """A parsed, not yet verified Web eID authentication token."""

    format: str
    algorithm: str
    certificate_der: bytes
    signature: bytes
    app_version: str | None


def parse_token(value: object) -> WebEidToken:
    """The token as the browser sends it (a JSON object, already decoded to a dict); WebEidTokenMalformed when it
    is not a "web-eid:1" token: a field missing, of the wrong type or oversize, an unknown algorithm, or base64
    that does not decode strictly."""
    if not isinstance(value, Mapping):
        raise WebEidTokenMalformed("the Web eID token is not a JSON object")
    if len(value) > MAX_FIELDS:
        raise WebEidTokenMalformed(f"the Web eID token has {len(value)} members")
    token_format = _field(value, "format", MAX_FORMAT)
    if not FORMAT_RE.fullmatch(token_format):
        raise WebEidTokenMalformed(f"format {token_format!r} is not web-eid:1")
    algorithm = _field(value, "algorithm", MAX_ALGORITHM)
    if algorithm not in ALGORITHMS:
        raise WebEidTokenMalformed(f"unsupported signature algorithm {algorithm!r} (one of {sorted(ALGORITHMS)})")
    certificate = _base64(_field(value, "unverifiedCertificate", MAX_CERTIFICATE_BASE64), "unverifiedCertificate")
    signature = _base64(_field(value, "signature", MAX_SIGNATURE_BASE64), "signature")
    app_version = value.get("appVersion")
    if app_version is not None and (not isinstance(app_version, str) or len(app_version) > MAX_APP_VERSION):
        raise WebEidTokenMalformed("appVersion is not a string of at most "
                                   f"{MAX_APP_VERSION} characters")
    return WebEidToken(format=token_format, algorithm=algorithm, certificate_der=certificate, signature=signature,
                       app_version=app_version)


def _field(value: Mapping[object, object], name: str, limit: int) -> str:
    item = value.get(name)
    if not isinstance(item, str) or not item:
        raise WebEidTokenMalformed(f"the Web eID token has no {name} string")
    if len(item) > limit:
        raise WebEidTokenMalformed(f"{name} is longer than {limit} characters")
    return item


def _base64(text: str, name: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebEidTokenMalformed(f"{name} is not standard base64: {exc}") from exc
    if not data:
        raise WebEidTokenMalformed(f"{name} is empty")
    return data


def signed_data(algorithm: str, *, origin: str, nonce: str) -> bytes:
    """hash(origin) || hash(nonce), the hash being the algorithm's (Web eID "Authentication token format")."""
    digest = _DIGESTS[algorithm[2:]]
    return bytes(digest(origin.encode()).digest() + digest(nonce.encode()).digest())


@functools.lru_cache(maxsize=KEY_CACHE_ENTRIES)
def _public_key(der: bytes) -> PublicKeyTypes:
    """The public key of the certificate `der` (CertificateMalformed when it does not parse; not cached then)."""
    try:
        return x509.load_der_x509_certificate(der).public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateMalformed(f"the token's certificate is not X.509 DER: {exc}") from exc


def verify_token_signature(token: WebEidToken, *, origin: str, nonce: str) -> None:
    """The token's signature verifies over hash(origin) || hash(nonce) with its certificate's key, or
    WebEidSignatureInvalid (another nonce, another origin, an algorithm that does not fit the key);
    CertificateMalformed when the certificate does not parse."""
    key = _public_key(token.certificate_der)
    algorithm = token.algorithm
    if algorithm not in ALGORITHMS:
        raise WebEidTokenMalformed(f"unsupported signature algorithm {algorithm!r}")
    digest = _HASHES[algorithm[2:]]()
    data = signed_data(algorithm, origin=origin, nonce=nonce)
    try:
        if algorithm.startswith("ES"):
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != _CURVES[algorithm]:
                raise WebEidSignatureInvalid(f"{algorithm} needs an EC key on {_CURVES[algorithm]}; the certificate "
                                             f"has {_describe(key)}")
            size = (key.curve.key_size + 7) // 8
            if len(token.signature) != 2 * size:
                raise WebEidSignatureInvalid(f"an {algorithm} signature is {2 * size} bytes raw r||s (IEEE P1363), "
                                             f"not {len(token.signature)}")
            r = int.from_bytes(token.signature[:size], "big")
            s = int.from_bytes(token.signature[size:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(digest))
        else:
            if not isinstance(key, rsa.RSAPublicKey):
                raise WebEidSignatureInvalid(f"{algorithm} needs an RSA key; the certificate has {_describe(key)}")
            if key.key_size < MIN_RSA_BITS:
                raise WebEidSignatureInvalid(f"an RSA key of {key.key_size} bits (at least {MIN_RSA_BITS} required)")
            scheme: padding.AsymmetricPadding = (
                padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.DIGEST_LENGTH)
                if algorithm.startswith("PS") else padding.PKCS1v15())
            key.verify(token.signature, data, scheme, digest)
    except InvalidSignature:
        raise WebEidSignatureInvalid(f"the {algorithm} signature does not verify over hash(origin) || hash(nonce) "
                                     f"for origin {origin!r}: another nonce or another site") from None


def _describe(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC key on {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"an RSA key of {key.key_size} bits"
    return f"a {type(key).__name__}"


def check_origin(origin: str) -> str:
    """`origin` if it is a serialised web origin (RFC 6454 section 6.2): http(s)://host[:port], lower case, no
    path, no trailing slash; ValueError otherwise (a configuration error: the token would never verify)."""
    parsed = urllib.parse.urlsplit(origin)
    if (parsed.scheme not in ("https", "http") or not parsed.hostname or parsed.path or parsed.query
            or parsed.fragment or parsed.username or parsed.password or origin != origin.lower()
            or origin.endswith("/")):
        raise ValueError(f"{origin!r} is not a web origin (scheme://host[:port], no path, no trailing slash)")
    return origin


class WebEidVerifier:
    """Verifies Web eID tokens for one origin (the issuer's, where the login page runs): the signature over the
    nonce first, then the certificate (`certificates`). The nonce's single use and expiry are the caller's (the
    challenge store)."""

    def __init__(self, certificates: CertificateVerifier, *, origin: str) -> None:
        self.certificates = certificates
        self.origin = check_origin(origin)

    async def verify(self, token: WebEidToken, *, nonce: str, at: dt.datetime | None = None) -> VerifiedCertificate:
        """The token's verified certificate, or the CardLoginError of the first failed check."""
        verify_token_signature(token, origin=self.origin, nonce=nonce)
        return await self.certificates.verify(token.certificate_der, at=at)
