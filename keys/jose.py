"""Compact JWS for tokens (RFC 7515, RFC 7518 section 3, RFC 8037 for EdDSA) and JWKs (RFC 7517).

Signing goes through a KeyHandle and is a coroutine like `KeyHandle.sign` (a PKCS#11 key signs in a worker
thread, a software key inline); the header of each (key, typ) pair is serialized once. Verification
accepts only the algorithms the caller names and only keys from the resolver it is given (STYLE habit 7):
no "none", no HMAC, no key taken from the token itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from keys.errors import InvalidToken, UnsupportedAlgorithm
from keys.interfaces import KeyHandle, KeyType

JwsAlg = Literal["ES256", "RS256", "EdDSA"]
ALG_KEY_TYPES: dict[str, tuple[KeyType, ...]] = {
    "ES256": ("EC-P256",),
    "RS256": ("RSA-2048", "RSA-3072"),
    "EdDSA": ("Ed25519",),
}
DEFAULT_KEY_TYPE: dict[str, KeyType] = {"ES256": "EC-P256", "RS256": "RSA-3072", "EdDSA": "Ed25519"}
CLOCK_SKEW_LEEWAY_SECONDS = 30
MAX_TOKEN_LENGTH = 8192
"""Longer compact JWS are refused before any decoding (our tokens are well under 2 KiB)."""
NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")
"""The registered claims whose value is a NumericDate (RFC 7519 sections 4.1.4 to 4.1.6)."""
MAX_NUMERIC_DATE = 253402300799
"""9999-12-31T23:59:59Z: the last second a datetime can hold; a later time is no time this provider can use."""
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)
# The C encoder behind json.dumps, called directly: a third cheaper than JSONEncoder.encode per token.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_COMPACT = (
    _c_make_encoder(None, _COMPACT_JSON.default, json.encoder.encode_basestring_ascii, None, ":", ",",
                    False, False, True)
    if _c_make_encoder is not None else None
)


def compact_json(value: Mapping[str, Any]) -> bytes:
    """Compact JSON of a claims object, ASCII only (the same bytes as json.dumps with tight separators)."""
    if _C_COMPACT is not None and type(value) is dict:
        return "".join(_C_COMPACT(value, 0)).encode()
    return _COMPACT_JSON.encode(value).encode()
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64url_bytes(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


def b64url(data: bytes) -> str:
    return _b64url_bytes(data).decode("ascii")


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed base64url") from None


def _int_b64(value: int, length: int | None = None) -> str:
    size = length or max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(size, "big"))


def public_jwk(public: PublicKeyTypes, *, kid: str, alg: str) -> dict[str, str]:
    """The public JWK of a signing key (RFC 7517 section 4, RFC 7518 section 6, RFC 8037 section 2)."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        nums = public.public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": _int_b64(nums.x, 32), "y": _int_b64(nums.y, 32),
                "kid": kid, "alg": alg, "use": "sig"}
    if isinstance(public, rsa.RSAPublicKey):
        rnums = public.public_numbers()
        return {"kty": "RSA", "n": _int_b64(rnums.n), "e": _int_b64(rnums.e), "kid": kid, "alg": alg, "use": "sig"}
    if isinstance(public, ed25519.Ed25519PublicKey):
        from cryptography.hazmat.primitives import serialization

        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "kid": kid, "alg": alg, "use": "sig"}
    raise UnsupportedAlgorithm(f"no JWK form for {type(public).__name__}")


def public_key_from_jwk(jwk: Mapping[str, Any]) -> tuple[PublicKeyTypes, str]:
    """The public key of a JWK and the one JWS algorithm it is accepted for (RFC 7517, RFC 7518 section 6,
    RFC 8037 section 2): EC P-256 -> ES256, RSA of 2048 to 8192 bits -> RS256, OKP Ed25519 -> EdDSA.

    A JWK holding private or symmetric material ("d", "k", ...) is refused, never reduced to its public half:
    whoever published it has leaked the key. A declared "alg" must be the one derived here.
    """
    private_members = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}  # RFC 7518 6.2.2, 6.3.2, 6.4.1; RFC 8037 2
    min_rsa_bits, max_rsa_bits = 2048, 8192

    def member(name: str) -> bytes:
        value = jwk.get(name)
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            raise InvalidToken(f"JWK member {name} must be unpadded base64url")
        return b64url_decode(value)

    if not isinstance(jwk, Mapping):
        raise InvalidToken("a JWK must be a JSON object")
    private = sorted(private_members & set(jwk))
    if private:
        raise InvalidToken(f"JWK holds private key material ({', '.join(private)})")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    public: PublicKeyTypes
    try:
        if kty == "EC" and crv == "P-256":
            x, y = member("x"), member("y")
            if len(x) != 32 or len(y) != 32:
                raise InvalidToken("P-256 coordinates must be 32 bytes")
            public = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()).public_key()
            alg = "ES256"
        elif kty == "RSA":
            n, e = int.from_bytes(member("n"), "big"), int.from_bytes(member("e"), "big")
            if not min_rsa_bits <= n.bit_length() <= max_rsa_bits:
                raise UnsupportedAlgorithm(f"RSA keys must have {min_rsa_bits} to {max_rsa_bits} bits")
            public = rsa.RSAPublicNumbers(e, n).public_key()
            alg = "RS256"
        elif kty == "OKP" and crv == "Ed25519":
            x = member("x")
            if len(x) != 32:
                raise InvalidToken("Ed25519 public keys must be 32 bytes")
            public = ed25519.Ed25519PublicKey.from_public_bytes(x)
            alg = "EdDSA"
        elif kty in ("EC", "OKP"):
            raise UnsupportedAlgorithm(f"unsupported {kty} curve {crv!r} (P-256 and Ed25519 are accepted)")
        else:
            raise UnsupportedAlgorithm(f"unsupported key type {kty!r} (EC, RSA and OKP are accepted)")
    except ValueError:
        raise InvalidToken(f"JWK is not a valid {kty} public key") from None
    declared = jwk.get("alg")
    if declared is not None and declared != alg:
        raise UnsupportedAlgorithm(f"JWK alg {declared!r} does not fit a {kty} key (only {alg})")
    return public, alg


class JwsSigner:
    """Signs compact JWS with one key handle; the protected header is built once per `typ`."""

    __slots__ = ("_alg", "_handle", "_headers", "kid")

    def __init__(self, handle: KeyHandle, alg: JwsAlg) -> None:
        if handle.key_type not in ALG_KEY_TYPES[alg]:
            raise UnsupportedAlgorithm(f"{alg} cannot be made with a {handle.key_type} key")
        self._handle = handle
        self._alg = alg
        self.kid = handle.key_id
        self._headers: dict[str, bytes] = {}

    @property
    def alg(self) -> JwsAlg:
        return self._alg

    def _header(self, typ: str) -> bytes:
        header = self._headers.get(typ)
        if header is None:
            fields = {"alg": self._alg, "kid": self.kid, "typ": typ}
            header = b64url(json.dumps(fields, separators=(",", ":")).encode()).encode()
            self._headers[typ] = header
        return header

    async def sign(self, claims: Mapping[str, Any], typ: str = "JWT") -> str:
        """The compact JWS of `claims` (RFC 7515 section 7.1); ES256 signatures as r||s (RFC 7518 section 3.4)."""
        signing_input = self._header(typ) + b"." + _b64url_bytes(compact_json(claims))
        signature = await self._handle.sign(signing_input, "sha256")
        if self._alg == "ES256":
            r, s = decode_dss_signature(signature)
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return (signing_input + b"." + _b64url_bytes(signature)).decode("ascii")


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not a JSON value")


def loads_json(data: bytes | str) -> Any:
    """JSON as RFC 8259 defines it, for the parts of a JWS (RFC 7515 section 5.2, RFC 7519 section 7.2).

    Python's json module reads the JavaScript literals NaN, Infinity and -Infinity as floats, but they are not JSON
    (RFC 8259 section 6: "Numeric values that cannot be represented ... (such as Infinity and NaN) are not
    permitted"): a token that holds one is not JSON, and is refused (ValueError) before any claim is read.
    """
    return json.loads(data, parse_constant=_not_json)


def is_numeric_date(value: object) -> bool:
    """Whether `value` is a NumericDate this provider accepts, the rule for exp, nbf and iat wherever a JWT is read.

    RFC 7519 section 2: a NumericDate is "A JSON numeric value representing the number of seconds from
    1970-01-01T00:00:00Z UTC until the specified UTC date/time ... non-integer values can be represented", so
    integers and finite fractions are both accepted. Refused: anything that is not a JSON number (strings,
    booleans, which Python counts as int, null, objects), NaN and the infinities (not JSON numbers at all, RFC 8259
    section 6: `loads_json` refuses them already), and numbers outside 0 to MAX_NUMERIC_DATE (before the epoch or
    after year 9999: never a real token's time, and past the range a datetime or a float comparison keeps exact).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (math.isfinite(value) if isinstance(value, float) else True) and 0 <= value <= MAX_NUMERIC_DATE


@dataclass(frozen=True, slots=True)
class VerifiedClaims:
    """Claims of a JWT whose signature, algorithm, issuer, audience and lifetime were checked.

    Only `JwsVerifier.verify` builds this type (STYLE habit 8).
    """

    header: Mapping[str, Any]
    claims: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.claims[name]


KeyResolver = Callable[[str], tuple[PublicKeyTypes, str] | None]


def _verify_signature(public: PublicKeyTypes, alg: str, signing_input: bytes, signature: bytes) -> None:
    try:
        if alg == "ES256" and isinstance(public, ec.EllipticCurvePublicKey):
            if len(signature) != 64:
                raise InvalidToken("ES256 signature must be 64 bytes")
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        elif alg == "RS256" and isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "EdDSA" and isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, signing_input)
        else:
            raise InvalidToken(f"key does not fit algorithm {alg}")
    except InvalidSignature:
        raise InvalidToken("signature does not verify") from None


class JwsVerifier:
    """Verifies compact JWTs against an explicit policy: algorithms, issuer, audience, typ, leeway."""

    def __init__(
        self,
        resolver: KeyResolver,
        *,
        algorithms: Iterable[str],
        issuer: str,
        audience: str | None,
        typ: str | None,
        leeway: int = CLOCK_SKEW_LEEWAY_SECONDS,
        required: Iterable[str] = ("exp", "iat", "iss"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._resolver = resolver
        self._algorithms = frozenset(algorithms) & frozenset(ALG_KEY_TYPES)
        if not self._algorithms:
            raise UnsupportedAlgorithm("verification needs at least one asymmetric algorithm")
        self._issuer = issuer
        self._audience = audience
        self._typ = typ
        self._leeway = leeway
        self._required = tuple(required)
        self._clock = clock

    def verify(self, token: str) -> VerifiedClaims:
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken(f"token longer than {MAX_TOKEN_LENGTH} characters")
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise InvalidToken("not a compact JWS")
        try:
            header = loads_json(b64url_decode(parts[0]))
            claims = loads_json(b64url_decode(parts[1]))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidToken("header or payload is not JSON") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise InvalidToken("header and payload must be JSON objects")
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise InvalidToken(f"algorithm {alg!r} is not accepted")
        if "crit" in header:
            raise InvalidToken("critical header parameters are not supported")
        if self._typ is not None and str(header.get("typ", "")).lower() not in (
            self._typ.lower(), "application/" + self._typ.lower()
        ):
            raise InvalidToken(f"typ must be {self._typ}")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("kid missing")
        found = self._resolver(kid)
        if found is None:
            raise InvalidToken("unknown signing key")
        public, key_alg = found
        if key_alg != alg:
            raise InvalidToken("algorithm does not match the key")
        _verify_signature(public, alg, f"{parts[0]}.{parts[1]}".encode("ascii"), b64url_decode(parts[2]))
        self._check_claims(claims)
        return VerifiedClaims(header=header, claims=claims)

    def _check_claims(self, claims: dict[str, Any]) -> None:
        for name in self._required:
            if name not in claims:
                raise InvalidToken(f"claim {name} is required")
        for name in NUMERIC_DATE_CLAIMS:
            if name in claims and not is_numeric_date(claims[name]):
                raise InvalidToken(f"claim {name} must be a NumericDate: a finite number of seconds since 1970 "
                                   "(RFC 7519 section 2)")
        now = self._clock()
        exp = claims.get("exp")
        if exp is not None and now > exp + self._leeway:
            raise InvalidToken("token has expired")
        nbf = claims.get("nbf")
        if nbf is not None and now + self._leeway < nbf:
            raise InvalidToken("token is not yet valid")
        if claims.get("iss") != self._issuer:
            raise InvalidToken("issuer does not match")
        if self._audience is not None:
            aud = claims.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if self._audience not in auds:
                raise InvalidToken("audience does not match")
