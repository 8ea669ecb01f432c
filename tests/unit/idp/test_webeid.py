"""The Web eID authentication token (idp.core.webeid): the real token vector made by the Web eID app with a test
ID card, tokens the tests sign with generated card keys as the extension would (tests/idcard_pki.sign_challenge),
and each detail implementations get wrong (the algorithm's hash, the nonce hashed as text, the origin without a
trailing slash, raw r||s ECDSA, base64 DER)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from idp.core.certificates import CertificateVerifier
from idp.core.errors import (
    CardLoginError,
    CertificateExpired,
    CertificateMalformed,
    CertificateRevoked,
    CertificateUntrusted,
    RevocationUnavailable,
    WebEidSignatureInvalid,
    WebEidTokenMalformed,
)
from idp.core.webeid import (
    MAX_CERTIFICATE_BASE64,
    NONCE_BYTES,
    WebEidToken,
    WebEidVerifier,
    check_origin,
    new_nonce,
    parse_token,
    verify_token_signature,
)
from tests.clock import Clock
from tests.idcard_pki import Card, IdCardPki, idcard_pki, sign_challenge

pytestmark = pytest.mark.nodb

ORIGIN = "https://login.acar.test"
VECTOR_FILE = Path(__file__).resolve().parents[3].parent / "shared/testdata/webeid/webeid-java-valid-token.json"
"""../shared/testdata/webeid beside the checkout (see its README.md)."""


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTOR_FILE.read_text())
    data["token"] = json.loads(data["token"])
    return data


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdCardPki]:
    with idcard_pki(tmp_path_factory.mktemp("idcard")) as world:
        yield world


@pytest.fixture(scope="module")
def p256(pki: IdCardPki) -> Card:
    return pki.card(curve=ec.SECP256R1())


@pytest.fixture(scope="module")
def p384(pki: IdCardPki) -> Card:
    return pki.card(curve=ec.SECP384R1())


@pytest.fixture
async def certificates(pki: IdCardPki) -> AsyncIterator[CertificateVerifier]:
    verifier = CertificateVerifier(pki.policy(), clock=Clock())
    yield verifier
    await verifier.aclose()


def signature_refused(token: WebEidToken, *, origin: str = ORIGIN, nonce: str) -> WebEidSignatureInvalid:
    with pytest.raises(WebEidSignatureInvalid) as caught:
        verify_token_signature(token, origin=origin, nonce=nonce)
    return caught.value


# --- the real token vector -----------------------------------------------------------------------------------


def test_the_real_token_verifies_with_its_origin_and_nonce(vector: dict[str, Any]) -> None:
    token = parse_token(vector["token"])
    assert (token.format, token.algorithm, len(token.signature)) == ("web-eid:1.0", "ES384", 96)
    assert token.app_version == "https://web-eid.eu/web-eid-app/releases/2.5.0+0"
    verify_token_signature(token, origin=vector["origin"], nonce=vector["nonce"])


def test_the_real_token_fails_for_another_nonce_or_origin(vector: dict[str, Any]) -> None:
    token = parse_token(vector["token"])
    origin, nonce = vector["origin"], vector["nonce"]
    signature_refused(token, origin=origin, nonce=new_nonce())
    signature_refused(token, origin=origin, nonce=nonce[:-1] + ("4" if nonce[-1] != "4" else "5"))
    signature_refused(token, origin="https://example.ee", nonce=nonce)
    signature_refused(token, origin=origin + "/", nonce=nonce)  # the origin has no trailing slash
    signature_refused(token, origin="https://ria.ee:443", nonce=nonce)


def test_the_real_token_signs_the_nonce_text(vector: dict[str, Any]) -> None:
    """Checked with `cryptography` alone: the app signed SHA-384(origin) || SHA-384(nonce as text), hashed again by
    ECDSA-SHA-384, r||s raw; SHA-384 of the base64-decoded nonce, or the origin with a slash, do not verify."""
    token = vector["token"]
    key = x509.load_der_x509_certificate(base64.b64decode(token["unverifiedCertificate"])).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    raw = base64.b64decode(token["signature"])
    signature = encode_dss_signature(int.from_bytes(raw[:48], "big"), int.from_bytes(raw[48:], "big"))

    def sha384(data: bytes) -> bytes:
        return hashlib.sha384(data).digest()

    origin, nonce = vector["origin"].encode(), vector["nonce"]
    key.verify(signature, sha384(origin) + sha384(nonce.encode()), ec.ECDSA(hashes.SHA384()))
    for wrong in (sha384(origin) + sha384(base64.b64decode(nonce)), sha384(origin + b"/") + sha384(nonce.encode()),
                  hashlib.sha256(origin).digest() + hashlib.sha256(nonce.encode()).digest()):
        with pytest.raises(InvalidSignature):
            key.verify(signature, wrong, ec.ECDSA(hashes.SHA384()))


async def test_the_real_token_through_the_verifier(vector: dict[str, Any], pki: IdCardPki) -> None:
    """Signature first (it verifies), then the certificate: an Estonian test CA that is no anchor here (at a time
    within its validity, 2021-07-22 .. 2026-07-09), expired after it."""
    certificates = CertificateVerifier(pki.policy(required_policies=frozenset()), clock=Clock())
    try:
        verifier = WebEidVerifier(certificates, origin=vector["origin"])
        token = parse_token(vector["token"])
        with pytest.raises(CertificateUntrusted):
            await verifier.verify(token, nonce=vector["nonce"], at=dt.datetime(2024, 3, 1, tzinfo=dt.UTC))
        with pytest.raises(CertificateExpired):
            await verifier.verify(token, nonce=vector["nonce"], at=dt.datetime(2026, 8, 1, tzinfo=dt.UTC))
        with pytest.raises(WebEidSignatureInvalid):
            await verifier.verify(token, nonce=new_nonce(), at=dt.datetime(2024, 3, 1, tzinfo=dt.UTC))
    finally:
        await certificates.aclose()


# --- tokens signed with generated card keys ------------------------------------------------------------------


@pytest.mark.parametrize(("curve", "algorithm", "size"), [(ec.SECP256R1(), "ES256", 64), (ec.SECP384R1(), "ES384", 96),
                                                          (ec.SECP521R1(), "ES512", 132)])
def test_ecdsa_tokens_are_raw_r_s(pki: IdCardPki, curve: ec.EllipticCurve, algorithm: str, size: int) -> None:
    card = pki.card(curve=curve)
    nonce = new_nonce()
    token = parse_token(card.token(origin=ORIGIN, nonce=nonce))
    assert (token.algorithm, len(token.signature)) == (algorithm, size)
    verify_token_signature(token, origin=ORIGIN, nonce=nonce)
    signature_refused(token, nonce=new_nonce())


@pytest.mark.parametrize("algorithm", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_rsa_tokens(pki: IdCardPki, algorithm: str) -> None:
    card = pki.card(rsa_bits=2048)
    nonce = new_nonce()
    token = parse_token(card.token(origin=ORIGIN, nonce=nonce, algorithm=algorithm))
    verify_token_signature(token, origin=ORIGIN, nonce=nonce)
    signature_refused(token, origin="https://evil.test", nonce=nonce)
    other = "PS" if algorithm.startswith("RS") else "RS"
    swapped = WebEidToken(token.format, other + algorithm[2:], token.certificate_der, token.signature, None)
    signature_refused(swapped, nonce=nonce)  # PKCS#1 v1.5 and PSS are not interchangeable


def test_the_hash_is_the_algorithms_own(p384: Card) -> None:
    """ES384 signs SHA-384(origin) || SHA-384(nonce): a card that hashed them with SHA-256 is refused."""
    nonce = new_nonce()
    data = hashlib.sha256(ORIGIN.encode()).digest() + hashlib.sha256(nonce.encode()).digest()
    assert isinstance(p384.key, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(p384.key.sign(data, ec.ECDSA(hashes.SHA384())))
    raw = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    token = WebEidToken("web-eid:1.0", "ES384", p384.der, raw, None)
    signature_refused(token, nonce=nonce)


def test_the_nonce_is_hashed_as_text(p256: Card) -> None:
    nonce = new_nonce()
    wrong = sign_challenge(p256.key, p256.certificate, origin=ORIGIN, nonce=nonce,
                           hashed_nonce=hashlib.sha256(base64.b64decode(nonce)).digest())
    signature_refused(parse_token(wrong), nonce=nonce)
    right = sign_challenge(p256.key, p256.certificate, origin=ORIGIN, nonce=nonce)
    verify_token_signature(parse_token(right), origin=ORIGIN, nonce=nonce)


def test_a_der_ecdsa_signature_is_refused(p256: Card) -> None:
    nonce = new_nonce()
    data = hashlib.sha256(ORIGIN.encode()).digest() + hashlib.sha256(nonce.encode()).digest()
    assert isinstance(p256.key, ec.EllipticCurvePrivateKey)
    der_signature = p256.key.sign(data, ec.ECDSA(hashes.SHA256()))
    exc = signature_refused(WebEidToken("web-eid:1.0", "ES256", p256.der, der_signature, None), nonce=nonce)
    assert "r||s" in exc.detail


def test_the_algorithm_must_fit_the_key(pki: IdCardPki, p256: Card, p384: Card) -> None:
    nonce = new_nonce()
    es384_by_p256 = parse_token(p256.token(origin=ORIGIN, nonce=nonce, algorithm="ES384"))
    assert "secp384r1" in signature_refused(es384_by_p256, nonce=nonce).detail
    es256_by_p384 = parse_token(p384.token(origin=ORIGIN, nonce=nonce, algorithm="ES256"))
    signature_refused(es256_by_p384, nonce=nonce)
    token = parse_token(p256.token(origin=ORIGIN, nonce=nonce))
    signature_refused(WebEidToken(token.format, "RS256", token.certificate_der, token.signature, None), nonce=nonce)
    rsa_card = pki.card(rsa_bits=2048)
    rsa_token = parse_token(rsa_card.token(origin=ORIGIN, nonce=nonce))
    signature_refused(WebEidToken(rsa_token.format, "ES256", rsa_token.certificate_der, rsa_token.signature, None),
                      nonce=nonce)


def test_a_token_certificate_that_does_not_parse(p256: Card) -> None:
    nonce = new_nonce()
    token = parse_token(p256.token(origin=ORIGIN, nonce=nonce))
    with pytest.raises(CertificateMalformed):
        verify_token_signature(WebEidToken(token.format, token.algorithm, b"\x30\x00", token.signature, None),
                               origin=ORIGIN, nonce=nonce)


# --- parsing ---------------------------------------------------------------------------------------------------


def test_new_nonce() -> None:
    nonces = {new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    for nonce in nonces:
        assert len(nonce) == 44
        assert len(base64.b64decode(nonce, validate=True)) == NONCE_BYTES


def _good(card: Card) -> dict[str, Any]:
    return card.token(origin=ORIGIN, nonce=new_nonce())


MALFORMED: dict[str, Any] = {
    "not an object": lambda t: [t],
    "a string": json.dumps,
    "no format": lambda t: {k: v for k, v in t.items() if k != "format"},
    "format web-eid:2": lambda t: {**t, "format": "web-eid:2"},
    "format web-eid:10": lambda t: {**t, "format": "web-eid:10"},
    "format web-eid:1.0.x": lambda t: {**t, "format": "web-eid:1.0.x"},
    "format oversize": lambda t: {**t, "format": "web-eid:1." + "0" * 40},
    "no algorithm": lambda t: {k: v for k, v in t.items() if k != "algorithm"},
    "algorithm none": lambda t: {**t, "algorithm": "none"},
    "algorithm HS256": lambda t: {**t, "algorithm": "HS256"},
    "algorithm es256": lambda t: {**t, "algorithm": "es256"},
    "algorithm a number": lambda t: {**t, "algorithm": 256},
    "no certificate": lambda t: {k: v for k, v in t.items() if k != "unverifiedCertificate"},
    "certificate base64url": lambda t: {**t, "unverifiedCertificate": "-_" + t["unverifiedCertificate"][2:]},
    "certificate unpadded": lambda t: {**t, "unverifiedCertificate": "QUI"},  # "AB" is "QUI=" in base64
    "certificate with whitespace": lambda t: {**t, "unverifiedCertificate": " " + t["unverifiedCertificate"]},
    "certificate oversize": lambda t: {**t, "unverifiedCertificate": "A" * (MAX_CERTIFICATE_BASE64 + 4)},
    "certificate a list": lambda t: {**t, "unverifiedCertificate": [t["unverifiedCertificate"]]},
    "no signature": lambda t: {k: v for k, v in t.items() if k != "signature"},
    "empty signature": lambda t: {**t, "signature": ""},
    "signature oversize": lambda t: {**t, "signature": "A" * 4096},
    "signature not base64": lambda t: {**t, "signature": "%%%%"},
    "appVersion a number": lambda t: {**t, "appVersion": 2},
    "appVersion oversize": lambda t: {**t, "appVersion": "x" * 1000},
    "too many members": lambda t: {**t, **{f"x{i}": i for i in range(20)}},
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_tokens(p256: Card, name: str) -> None:
    with pytest.raises(WebEidTokenMalformed):
        parse_token(MALFORMED[name](_good(p256)))


@pytest.mark.parametrize("token_format", ["web-eid:1", "web-eid:1.0", "web-eid:1.1"])
def test_web_eid_1_formats_parse(p256: Card, token_format: str) -> None:
    token = _good(p256)
    del token["appVersion"]
    parsed = parse_token({**token, "format": token_format, "unverifiedSigningCertificate": "ignored"})
    assert (parsed.format, parsed.app_version, parsed.certificate_der) == (token_format, None, p256.der)


async def test_origins(certificates: CertificateVerifier) -> None:
    for good in ("https://ria.ee", "https://login.acar.test:8443", "http://127.0.0.1:8000"):
        assert check_origin(good) == good
    for bad in ("https://ria.ee/", "https://ria.ee/login", "ria.ee", "https://RIA.ee", "ftp://ria.ee",
                "https://ria.ee?x=1", "https://user@ria.ee"):
        with pytest.raises(ValueError, match="origin"):
            check_origin(bad)
    with pytest.raises(ValueError, match="origin"):
        WebEidVerifier(certificates, origin="https://ria.ee/")


# --- the whole verification: signature, then certificate -----------------------------------------------------


@pytest.mark.parametrize("card_name", ["p256", "p384"])
async def test_a_token_verifies_end_to_end(request: pytest.FixtureRequest, certificates: CertificateVerifier,
                                           card_name: str) -> None:
    card: Card = request.getfixturevalue(card_name)
    verifier = WebEidVerifier(certificates, origin=ORIGIN)
    nonce = new_nonce()
    verified = await verifier.verify(parse_token(card.token(origin=ORIGIN, nonce=nonce)), nonce=nonce)
    assert verified.fingerprint == card.fingerprint
    assert verified.holder.fin == "5ABC123"
    assert verified.revocation == "good"


async def test_the_signature_is_checked_before_any_network(tmp_path: Path) -> None:
    """A token over another nonce is refused as such even while the responder is down, and no path validation
    ran; a valid token then meets the unreachable responder (fail-closed)."""
    with idcard_pki(tmp_path / "pki", start=False) as pki:
        card = pki.card()
        certificates = CertificateVerifier(pki.policy(), clock=Clock())
        try:
            verifier = WebEidVerifier(certificates, origin=ORIGIN)
            token = parse_token(card.token(origin=ORIGIN, nonce=new_nonce()))
            with pytest.raises(WebEidSignatureInvalid):
                await verifier.verify(token, nonce=new_nonce())
            assert certificates.validations == 0
            nonce = new_nonce()
            with pytest.raises(RevocationUnavailable):
                await verifier.verify(parse_token(card.token(origin=ORIGIN, nonce=nonce)), nonce=nonce)
        finally:
            await certificates.aclose()


@pytest.mark.parametrize(("make_card", "error"), [("revoked_card", CertificateRevoked),
                                                  ("expired_card", CertificateExpired),
                                                  ("unknown_ca_card", CertificateUntrusted)])
async def test_a_valid_signature_by_a_bad_card_is_refused(pki: IdCardPki, certificates: CertificateVerifier,
                                                          make_card: str, error: type[CardLoginError]) -> None:
    card: Card = getattr(pki, make_card)()
    nonce = new_nonce()
    with pytest.raises(error):
        await WebEidVerifier(certificates, origin=ORIGIN).verify(
            parse_token(card.token(origin=ORIGIN, nonce=nonce)), nonce=nonce)
