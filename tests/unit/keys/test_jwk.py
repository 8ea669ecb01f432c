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
