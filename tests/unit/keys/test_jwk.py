"""public_key_from_jwk: JWKs made by an independent library (PyJWT) become keys with their one algorithm."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from keys.errors import InvalidToken, UnsupportedAlgorithm
from keys.jose import public_key_from_jwk


def _ec() -> dict[str, Any]:
    return ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)


def _rsa(bits: int = 2048) -> dict[str, Any]:
    return RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, bits).public_key(), as_dict=True)


def _okp() -> dict[str, Any]:
    return OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate().public_key(), as_dict=True)


@pytest.mark.parametrize(("make", "alg", "kind"), [
    (_ec, "ES256", ec.EllipticCurvePublicKey),
    (_rsa, "RS256", rsa.RSAPublicKey),
    (_okp, "EdDSA", ed25519.Ed25519PublicKey),
])
def test_public_keys_map_to_their_algorithm(make: Any, alg: str, kind: type) -> None:
    public, found = public_key_from_jwk(make())
    assert found == alg and isinstance(public, kind)
    public, found = public_key_from_jwk({**make(), "alg": alg, "use": "sig", "kid": "k1"})
    assert found == alg


@pytest.mark.parametrize("private", [
    lambda: ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True),
    lambda: RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048), as_dict=True),
    lambda: OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate(), as_dict=True),
    lambda: {"kty": "oct", "k": "c2VjcmV0"},
])
def test_private_material_is_refused(private: Any) -> None:
    with pytest.raises(InvalidToken, match="private key material"):
        public_key_from_jwk(private())


@pytest.mark.parametrize(("jwk", "error", "message"), [
    ({**_ec(), "crv": "P-384"}, UnsupportedAlgorithm, "unsupported EC curve"),
    ({**_okp(), "crv": "X25519"}, UnsupportedAlgorithm, "unsupported OKP curve"),
    ({"kty": "oct"}, UnsupportedAlgorithm, "unsupported key type"),
    ({"n": "AQAB"}, UnsupportedAlgorithm, "unsupported key type"),
    (_rsa(1024), UnsupportedAlgorithm, "2048 to 8192 bits"),
    ({**_ec(), "alg": "ES384"}, UnsupportedAlgorithm, "does not fit"),
    ({**_rsa(), "alg": "PS256"}, UnsupportedAlgorithm, "does not fit"),
    ({**_ec(), "x": "not base64!"}, InvalidToken, "unpadded base64url"),
    ({**_ec(), "x": _ec()["x"] + "="}, InvalidToken, "unpadded base64url"),
    ({**_ec(), "y": 5}, InvalidToken, "unpadded base64url"),
    ({**_ec(), "x": "AAAA"}, InvalidToken, "32 bytes"),
    ({**_ec(), "y": _ec()["x"]}, InvalidToken, "not a valid EC public key"),  # not on the curve
    ({**_okp(), "x": "AAAA"}, InvalidToken, "32 bytes"),
])
def test_malformed_or_unsupported_jwks_are_refused(jwk: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        public_key_from_jwk(jwk)


# --- NumericDate claims (RFC 7519 section 2) -------------------------------------------------------------------

_SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())


def _signed(payload: bytes, key: ec.EllipticCurvePrivateKey = _SIGNING_KEY) -> str:
    """A compact ES256 JWS over these exact payload bytes (the JSON may hold what no JSON encoder writes)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from keys.jose import b64url

    signing_input = b64url(b'{"alg":"ES256","kid":"k1","typ":"JWT"}') + "." + b64url(payload)
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def _verifier() -> Any:
    from keys.jose import JwsVerifier

    public = _SIGNING_KEY.public_key()
    return JwsVerifier(lambda kid: (public, "ES256") if kid == "k1" else None, algorithms=["ES256"],
                       issuer="https://op.example", audience=None, typ=None)


def _payload(**dates: str) -> bytes:
    import time

    now = int(time.time())
    fields = {"iss": '"https://op.example"', "iat": str(now), "exp": str(now + 60), **dates}
    return ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()


def test_a_good_token_verifies_with_integer_or_fractional_dates() -> None:
    import time

    now = time.time()
    assert _verifier().verify(_signed(_payload()))["iss"] == "https://op.example"
    # RFC 7519 section 2: "non-integer values can be represented"
    claims = _verifier().verify(_signed(_payload(iat=repr(now), exp=repr(now + 60.5), nbf=repr(now - 1.25)))).claims
    assert claims["exp"] == now + 60.5


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(claim: str, value: str) -> None:
    with pytest.raises(InvalidToken, match="not JSON"):
        _verifier().verify(_signed(_payload(**{claim: value})))


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", ['"1900000000"', "true", "false", "null", "[1]", '{"t":1}', "-5", "1e300",
                                   "1" + "0" * 40, "253402300800"])
def test_numeric_dates_must_be_finite_numbers_in_range(claim: str, value: str) -> None:
    with pytest.raises(InvalidToken, match=f"claim {claim} must be a NumericDate"):
        _verifier().verify(_signed(_payload(**{claim: value})))


def test_is_numeric_date() -> None:
    from keys.jose import MAX_NUMERIC_DATE, is_numeric_date

    assert is_numeric_date(0) and is_numeric_date(1_900_000_000) and is_numeric_date(1_900_000_000.5)
    assert is_numeric_date(MAX_NUMERIC_DATE) and not is_numeric_date(MAX_NUMERIC_DATE + 1)
    for bad in (True, False, None, "1", float("nan"), float("inf"), -float("inf"), -1, 10**400):
        assert not is_numeric_date(bad), bad
