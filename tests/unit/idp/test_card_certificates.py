"""ID-card certificate verification (idp.core.certificates) against the generated ID-card PKI of
tests/idcard_pki.py: a real `openssl ocsp` responder process on loopback, a CRL served on loopback, and card
certificates made with `cryptography`. Every refusal has its own CardLoginError subclass; the verdict cache answers
without network until the revocation data's nextUpdate."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from idp.core import certificates as certificates_module
from idp.core.certificates import CardPolicy, CertificateVerifier, load_certificates, parse_holder
from idp.core.errors import (
    CardLoginError,
    CertificateExpired,
    CertificateIdentifierUnsupported,
    CertificateMalformed,
    CertificateNotYetValid,
    CertificatePolicyMissing,
    CertificateRevoked,
    CertificateSelfSigned,
    CertificateUntrusted,
    CertificateWrongUsage,
    RevocationUnavailable,
)
from tests.clock import Clock
from tests.idcard_pki import CARD_POLICY, Card, IdCardPki, idcard_pki
from tests.local_http import free_port

pytestmark = pytest.mark.nodb

VECTOR = Path(__file__).resolve().parents[3].parent / "shared/testdata/webeid/webeid-java-valid-token.json"
"""../shared/testdata/webeid beside the checkout: a real token's known-answer vector (see its README.md)."""


def real_certificate() -> bytes:
    """The certificate of the real Web eID token (a TEST of ESTEID2018 card, valid 2021-07-22 .. 2026-07-09)."""
    token = json.loads(json.loads(VECTOR.read_text())["token"])
    return base64.b64decode(token["unverifiedCertificate"])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdCardPki]:
    """One PKI for the tests that leave its responder running and revoke only their own cards."""
    with idcard_pki(tmp_path_factory.mktemp("idcard"), crl=True) as world:
        yield world


@pytest.fixture
def own_pki(tmp_path: Path) -> Iterator[IdCardPki]:
    """A PKI of the test's own, for tests that stop or restart the responder."""
    with idcard_pki(tmp_path / "pki", crl=True) as world:
        yield world


@pytest.fixture
def clock() -> Clock:
    return Clock()


Make = Callable[..., CertificateVerifier]


@pytest.fixture
async def make(clock: Clock) -> AsyncIterator[Make]:
    made: list[CertificateVerifier] = []

    def build(policy: CardPolicy) -> CertificateVerifier:
        verifier = CertificateVerifier(policy, clock=clock)
        made.append(verifier)
        return verifier

    yield build
    for verifier in made:
        await verifier.aclose()


async def refused(verifier: CertificateVerifier, der: bytes, **kw: object) -> CardLoginError:
    with pytest.raises(CardLoginError) as caught:
        await verifier.verify(der, **kw)  # type: ignore[arg-type]
    return caught.value


# --- happy paths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()], ids=["P-256", "P-384"])
async def test_a_card_verifies_with_its_holder_and_ocsp_good(pki: IdCardPki, make: Make,
                                                             curve: ec.EllipticCurve) -> None:
    card = pki.card("5abc123", curve=curve, given_name="Aygün", surname="Məmmədova")
    verified = await make(pki.policy()).verify(card.der)
    assert verified.revocation == "good"
    assert verified.revocation_source == "ocsp"
    assert verified.fingerprint == card.fingerprint
    assert verified.serial_number == card.serial_number
    assert verified.der == card.der
    assert verified.not_after == card.certificate.not_valid_after_utc
    assert verified.issuer == pki.issuing_certificate.subject.rfc4514_string()
    assert "2.5.4.5=PNOAZ-5abc123" in verified.subject
    holder = verified.holder
    assert (holder.identifier_type, holder.country, holder.number) == ("PNO", "AZ", "5ABC123")
    assert holder.fin == "5ABC123"
    assert holder.identifier == "PNOAZ-5ABC123"
    assert (holder.given_name, holder.surname) == ("Aygün", "Məmmədova")
    assert holder.common_name == "MƏMMƏDOVA,AYGÜN,5abc123"


async def test_an_rsa_card_verifies(pki: IdCardPki, make: Make) -> None:
    verified = await make(pki.policy()).verify(pki.card(rsa_bits=2048).der)
    assert verified.revocation == "good"


@pytest.mark.parametrize(("kind", "number", "expected"), [("IDC", "AZ-aa1234567", "AA1234567"),
                                                          ("PAS", "AZ-C01234567", "C01234567"),
                                                          ("PNO", "EE-38001085718", "38001085718")])
async def test_foreign_identifiers_verify_without_a_fin(pki: IdCardPki, make: Make, kind: str, number: str,
                                                        expected: str) -> None:
    """ETSI EN 319 412-1 section 5.1.3: IDC (identity card) and PAS (passport) numbers of a foreign resident, and a
    personal number of another country, name the holder; only PNOAZ is a FIN."""
    holder = (await make(pki.policy()).verify(pki.foreign_card(kind, number).der)).holder
    assert (holder.identifier_type, holder.number, holder.fin) == (kind, expected, None)
    assert holder.identifier == f"{kind}{number[:2]}-{expected}"


async def test_the_policy_requirement_is_optional(pki: IdCardPki, make: Make) -> None:
    card = pki.no_policy_card()
    await refused(make(pki.policy()), card.der)
    assert (await make(pki.policy(required_policies=frozenset())).verify(card.der)).revocation == "good"
    assert (await make(pki.policy(required_policies=frozenset({"1.2.3.4", CARD_POLICY}))).verify(
        pki.card().der)).revocation == "good"


async def test_presented_intermediates_complete_the_path(pki: IdCardPki, make: Make) -> None:
    """A TLS client sends its chain: with only the root configured, the presented issuing CA builds the path."""
    verifier = make(pki.policy(intermediates=()))
    card = pki.card()
    assert isinstance(await refused(verifier, card.der), CertificateUntrusted)
    verified = await verifier.verify(card.der, intermediates=[pki.issuing_certificate.public_bytes(
        serialization.Encoding.DER)])
    assert verified.revocation == "good"


# --- every refusal, each with its own error ------------------------------------------------------------------


def _no_serial(pki: IdCardPki) -> Card:
    return pki.card(serial_number=None)


NEGATIVES: dict[str, tuple[Callable[[IdCardPki], Card], type[CardLoginError]]] = {
    "expired": (IdCardPki.expired_card, CertificateExpired),
    "not yet valid": (IdCardPki.not_yet_valid_card, CertificateNotYetValid),
    "revoked": (IdCardPki.revoked_card, CertificateRevoked),
    "nonRepudiation only": (IdCardPki.non_repudiation_card, CertificateWrongUsage),
    "no keyUsage": (lambda p: p.card(with_key_usage=False), CertificateWrongUsage),
    "emailProtection only": (IdCardPki.email_protection_card, CertificateWrongUsage),
    "no extendedKeyUsage": (lambda p: p.card(ekus=None), CertificateWrongUsage),
    "self-signed": (IdCardPki.self_signed_card, CertificateSelfSigned),
    "unknown CA": (IdCardPki.unknown_ca_card, CertificateUntrusted),
    "forged issuer name": (IdCardPki.forged_issuer_card, CertificateUntrusted),
    # pyhanko-certvalidator asserts the issuer's key type (an AssertionError, once a 500)
    "Ed25519 signature under the EC CA's name": (lambda p: p.card(issuer="forged-ed25519"), CertificateUntrusted),
    "Ed448 signature under the EC CA's name": (lambda p: p.card(issuer="forged-ed448"), CertificateUntrusted),
    "without the policy": (IdCardPki.no_policy_card, CertificatePolicyMissing),
    "no certificatePolicies": (lambda p: p.card(policies=()), CertificatePolicyMissing),
    "serialNumber without '-'": (IdCardPki.malformed_serial_card, CertificateMalformed),
    "PNOAZ that is no FIN": (lambda p: p.card(serial_number="PNOAZ-12345"), CertificateMalformed),
    "lower-case type": (lambda p: p.card(serial_number="pnoaz-5ABC123"), CertificateMalformed),
    "TIN identifier": (lambda p: p.card(serial_number="TINAZ-1234567"), CertificateIdentifierUnsupported),
    "no serialNumber": (_no_serial, CertificateIdentifierUnsupported),
}


@pytest.mark.parametrize("name", list(NEGATIVES))
async def test_each_refusal_has_its_own_error(pki: IdCardPki, make: Make, name: str) -> None:
    build, error = NEGATIVES[name]
    exc = await refused(make(pki.policy()), build(pki).der)
    assert type(exc) is error, (name, exc.detail)
    assert exc.code == error.code


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x01", b"not a certificate", b"\x30" * 20000],
                         ids=["empty", "integer", "text", "oversize"])
async def test_bytes_that_are_no_certificate_are_malformed(pki: IdCardPki, make: Make, der: bytes) -> None:
    assert isinstance(await refused(make(pki.policy()), der), CertificateMalformed)


async def test_a_revoked_card_is_refused_even_with_soft_fail(pki: IdCardPki, make: Make) -> None:
    exc = await refused(make(pki.policy(soft_fail=True)), pki.revoked_card().der)
    assert isinstance(exc, CertificateRevoked)
    assert "OCSP" in exc.detail


async def test_an_ocsp_unknown_card_is_untrusted_even_with_soft_fail(pki: IdCardPki, make: Make) -> None:
    """The CA's key signed it but its responder does not know it (RFC 6960 section 2.2 "unknown"): OpenSSL's
    handshake would accept it; the application refuses it."""
    card = pki.card()
    pki.forget(card)
    for soft in (False, True):
        exc = await refused(make(pki.policy(soft_fail=soft)), card.der)
        assert isinstance(exc, CertificateUntrusted), exc.detail
        assert "unknown" in exc.detail


async def test_a_card_naming_no_revocation_source_fails_closed(pki: IdCardPki, make: Make) -> None:
    card = pki.card(ocsp=False)
    assert isinstance(await refused(make(pki.policy()), card.der), RevocationUnavailable)
    # soft-fail tolerates an outage of a card's sources, not a card that names none
    exc = await refused(make(pki.policy(soft_fail=True)), card.der)
    assert isinstance(exc, RevocationUnavailable)
    assert "names no OCSP responder" in exc.detail


# --- the responder down, CRL fallback, the OCSP URL override -------------------------------------------------


async def test_responder_down_fails_closed_and_soft_fail_reports_it(own_pki: IdCardPki, make: Make) -> None:
    card = own_pki.card()
    own_pki.responder.stop()
    exc = await refused(make(own_pki.policy()), card.der)
    assert isinstance(exc, RevocationUnavailable)
    assert exc.status_code == 503
    soft = make(own_pki.policy(soft_fail=True))
    verified = await soft.verify(card.der)
    assert (verified.revocation, verified.revocation_source) == ("soft-fail", "none")
    assert soft.cached == 0  # a soft-fail verdict is not remembered: the next login asks again
    own_pki.responder.start()
    again = await soft.verify(card.der)
    assert (again.revocation, again.revocation_source) == ("good", "ocsp")
    assert soft.validations == 2


async def test_crl_fallback_when_the_responder_is_down(own_pki: IdCardPki, make: Make) -> None:
    good = own_pki.card(crl=True)
    revoked = own_pki.revoked_card(crl=True)
    own_pki.responder.stop()
    verifier = make(own_pki.policy())
    verified = await verifier.verify(good.der)
    assert (verified.revocation, verified.revocation_source) == ("good", "crl")
    soft = await make(own_pki.policy(soft_fail=True)).verify(good.der)
    assert (soft.revocation, soft.revocation_source) == ("good", "crl")  # the fail-closed check passed
    exc = await refused(verifier, revoked.der)
    assert isinstance(exc, CertificateRevoked)
    assert "CRL" in exc.detail
    assert own_pki.crl_http is not None
    assert own_pki.crl_http.count(own_pki.CRL_PATH) >= 2


async def test_an_unreachable_ca_crl_fails_closed_and_soft_fail_says_so(tmp_path: Path, make: Make) -> None:
    """The issuing CA names a CRL nobody serves: the path fails closed although the card's own OCSP answer is
    good; with soft_fail it passes as "soft-fail" (the card's source still named), never as "good"."""
    with idcard_pki(tmp_path / "pki", issuing_crl_url=f"http://127.0.0.1:{free_port()}/root.crl") as pki:
        card = pki.card()
        exc = await refused(make(pki.policy()), card.der)
        assert isinstance(exc, RevocationUnavailable), exc.detail
        soft = make(pki.policy(soft_fail=True))
        verified = await soft.verify(card.der)
        assert (verified.revocation, verified.revocation_source) == ("soft-fail", "ocsp")
        assert soft.cached == 0


async def test_a_crl_only_card(pki: IdCardPki, make: Make) -> None:
    verified = await make(pki.policy()).verify(pki.card(ocsp=False, crl=True).der)
    assert (verified.revocation, verified.revocation_source) == ("good", "crl")


async def test_the_ocsp_url_override_replaces_the_certificates_url(pki: IdCardPki, make: Make) -> None:
    card = pki.card(ocsp_url=f"http://127.0.0.1:{free_port()}/nobody-listens")
    assert isinstance(await refused(make(pki.policy()), card.der), RevocationUnavailable)
    verified = await make(pki.policy(ocsp_url=pki.ocsp_url)).verify(card.der)
    assert (verified.revocation, verified.revocation_source) == ("good", "ocsp")


# --- the verdict cache ---------------------------------------------------------------------------------------


async def test_a_second_verification_needs_no_responder(own_pki: IdCardPki, make: Make) -> None:
    card = own_pki.card()
    verifier = make(own_pki.policy())
    first = await verifier.verify(card.der)
    own_pki.responder.stop()
    second = await verifier.verify(card.der)
    assert second == first
    assert verifier.validations == 1
    assert verifier.cached == 1
    # another card is not answered from the cache
    assert isinstance(await refused(verifier, own_pki.card().der), RevocationUnavailable)


async def test_the_cache_keeps_a_verdict_until_nextupdate_then_asks_again(tmp_path: Path, clock: Clock,
                                                                         make: Make) -> None:
    """The responder's answers hold for one minute (nextUpdate = thisUpdate + 1 min, `openssl ocsp -nmin 1`): a
    card revoked after its first login is still accepted within that minute (the response's validity) and refused
    as revoked once it has passed."""
    with idcard_pki(tmp_path / "pki", nmin=1) as pki:
        card = pki.card()
        verifier = make(pki.policy(cache_seconds=3600))
        await verifier.verify(card.der)
        pki.revoke(card)
        clock.now += dt.timedelta(seconds=50)
        assert (await verifier.verify(card.der)).revocation == "good"
        assert verifier.validations == 1
        clock.now += dt.timedelta(seconds=20)  # past nextUpdate
        assert isinstance(await refused(verifier, card.der), CertificateRevoked)
        assert verifier.validations == 2
        assert verifier.cached == 0


async def test_cache_seconds_bounds_a_verdict(own_pki: IdCardPki, clock: Clock, make: Make) -> None:
    card = own_pki.card()
    verifier = make(own_pki.policy(cache_seconds=30))
    await verifier.verify(card.der)
    own_pki.responder.stop()
    clock.now += dt.timedelta(seconds=29)
    await verifier.verify(card.der)
    clock.now += dt.timedelta(seconds=2)
    assert isinstance(await refused(verifier, card.der), RevocationUnavailable)
    assert verifier.validations == 2


async def test_a_cached_verdict_does_not_answer_for_an_earlier_time(own_pki: IdCardPki, clock: Clock,
                                                                    make: Make) -> None:
    card = own_pki.card()
    verifier = make(own_pki.policy())
    await verifier.verify(card.der)
    exc = await refused(verifier, card.der, at=card.certificate.not_valid_before_utc - dt.timedelta(hours=1))
    assert isinstance(exc, CertificateNotYetValid)
    assert verifier.validations == 1  # refused by the local check, the cache did not answer


async def test_the_cache_is_keyed_by_the_presented_intermediates(pki: IdCardPki, make: Make) -> None:
    verifier = make(pki.policy(intermediates=()))
    card = pki.card()
    issuing = pki.issuing_certificate.public_bytes(serialization.Encoding.DER)
    await verifier.verify(card.der, intermediates=[issuing])
    assert isinstance(await refused(verifier, card.der), CertificateUntrusted)


async def test_the_cache_is_bounded(pki: IdCardPki, make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(certificates_module, "CACHE_ENTRIES", 3)
    verifier = make(pki.policy())
    cards = [pki.card() for _ in range(5)]
    for card in cards:
        await verifier.verify(card.der)
    assert verifier.cached == 3
    await verifier.verify(cards[-1].der)  # the most recent ones stay
    assert verifier.validations == 5


# --- the real Web eID vector's certificate -------------------------------------------------------------------


async def test_the_real_card_certificate_is_untrusted_here(pki: IdCardPki, make: Make) -> None:
    """The TEST of ESTEID2018 certificate chains to an Estonian test CA that is no anchor here; at a time within its
    validity (2021-07-22 .. 2026-07-09) path validation fails with "untrusted", after it "expired"."""
    der = real_certificate()
    verifier = make(pki.policy(required_policies=frozenset()))
    exc = await refused(verifier, der, at=dt.datetime(2024, 1, 15, 12, tzinfo=dt.UTC))
    assert isinstance(exc, CertificateUntrusted), exc.detail
    exc = await refused(verifier, der, at=dt.datetime(2026, 7, 10, tzinfo=dt.UTC))
    assert isinstance(exc, CertificateExpired)


def test_the_real_card_names_its_holder() -> None:
    holder = parse_holder(x509.load_der_x509_certificate(real_certificate()))
    assert (holder.identifier_type, holder.country, holder.number, holder.fin) == ("PNO", "EE", "38001085718", None)
    assert (holder.given_name, holder.surname) == ("JAAK-KRISTJAN", "JÕEORG")
    assert holder.common_name == "JÕEORG,JAAK-KRISTJAN,38001085718"


# --- configuration -------------------------------------------------------------------------------------------


def test_load_certificates_reads_pem_bundles_and_der(pki: IdCardPki, tmp_path: Path) -> None:
    files = pki.write_trust(tmp_path)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(files.anchors.read_bytes() + b"\n" + files.intermediates.read_bytes())
    der = tmp_path / "root.cer"
    der.write_bytes(pki.anchors[0])
    assert load_certificates([bundle, der]) == (pki.anchors[0], pki.intermediates[0], pki.anchors[0])
    assert load_certificates([files.anchors]) == pki.anchors
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="garbage.pem"):
        load_certificates([garbage])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        load_certificates([tmp_path / "notes.txt"])


def test_a_policy_needs_anchors() -> None:
    with pytest.raises(ValueError, match="anchor"):
        CertificateVerifier(CardPolicy(anchors=()), clock=Clock())
