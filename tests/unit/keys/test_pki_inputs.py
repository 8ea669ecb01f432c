"""Input validation of the CA: subjects (FIN, VÖEN, names), subject keys and CSRs, serials, revocation reasons."""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from keys.crl import parse_reason
from keys.errors import InvalidCertificateRequest
from keys.identifiers import InvalidIdentifierFormat, normalize_fin, normalize_voen
from keys.profiles import LegalPerson, NaturalPerson
from keys.x509 import (
    parse_serial,
    random_serial,
    subject_key_from_csr,
    subject_key_from_pem,
    x509_time,
)


def test_fin_is_seven_latin_letters_or_digits_in_upper_case() -> None:
    assert normalize_fin(" 5abc12d ") == "5ABC12D"
    # "ß".upper() is "SS": six characters must not become a seven-character FIN
    for bad in ("12345", "12345678", "AB-1234", "ƏBC1234", "12345ß", "1234ﬀ5", "", None):
        with pytest.raises(InvalidIdentifierFormat, match="FIN must be exactly 7"):
            normalize_fin(bad)
    with pytest.raises(InvalidCertificateRequest, match="FIN must be exactly 7"):  # as the CA reports it
        NaturalPerson.create(fin="12345ß", given_name="A", surname="B")


def test_voen_is_ten_digits() -> None:
    assert normalize_voen("1234567890") == "1234567890"
    for bad in ("123456789", "12345678901", "12345A7890", "１２３４５６７８９０", "", None):
        with pytest.raises(InvalidIdentifierFormat, match="VÖEN must be exactly 10 digits"):
            normalize_voen(bad)
    with pytest.raises(InvalidCertificateRequest, match="VÖEN must be exactly 10 digits"):
        LegalPerson.create(voen="12345", organization="X")


def test_natural_person_names() -> None:
    person = NaturalPerson.create(fin="5abc12d", given_name=" Aysel ", surname="Məmmədova")
    assert (person.fin, person.given_name, person.surname, person.common_name) == (
        "5ABC12D", "Aysel", "Məmmədova", "Aysel Məmmədova")
    with pytest.raises(InvalidCertificateRequest, match="given name must not be empty"):
        NaturalPerson.create(fin="5ABC12D", given_name=" ", surname="B")
    with pytest.raises(InvalidCertificateRequest, match="surname must not contain control characters"):
        NaturalPerson.create(fin="5ABC12D", given_name="A", surname="B\nC")
    with pytest.raises(InvalidCertificateRequest, match="common name must be at most 64"):
        NaturalPerson.create(fin="5ABC12D", given_name="A" * 40, surname="B" * 40)
    assert NaturalPerson.create(fin="5ABC12D", given_name="A" * 40, surname="B" * 40,
                                common_name="A. B.").common_name == "A. B."


def test_legal_person() -> None:
    org = LegalPerson.create(voen="1234567890", organization="Nümunə MMC")
    assert org.common_name == "Nümunə MMC"
    with pytest.raises(InvalidCertificateRequest, match="organization name must not be empty"):
        LegalPerson.create(voen="1234567890", organization=None)


def test_serials_are_random_positive_159_bit_numbers_of_20_octets() -> None:
    serials = {random_serial() for _ in range(200)}
    assert len(serials) == 200
    for serial in serials:
        assert serial.bit_length() == 159
        assert len(core.Integer(serial).contents) == 20  # RFC 5280 section 4.1.2.2: at most 20 octets, positive


def test_serial_parsing() -> None:
    assert parse_serial("0x00AB:CD") == "abcd"
    assert parse_serial(" 7F ") == "7f"
    for bad in ("", "0", "xyz", "12 34", "f" * 41, "-1"):
        with pytest.raises(InvalidCertificateRequest, match="positive hexadecimal"):
            parse_serial(bad)


def test_revocation_reasons_are_rfc5280_names() -> None:
    assert parse_reason("keycompromise") == "keyCompromise"
    assert parse_reason("aACompromise") == "aACompromise"
    with pytest.raises(InvalidCertificateRequest, match="cessationOfOperation"):
        parse_reason("removeFromCRL")  # only for delta CRLs, not a reason to revoke


def test_time_encoding_switches_to_generalized_time_in_2050() -> None:
    assert x509_time(dt.datetime(2049, 12, 31, 23, 59, 59, 999, tzinfo=dt.UTC)).name == "utc_time"
    assert x509_time(dt.datetime(2050, 1, 1, tzinfo=dt.UTC)).name == "general_time"


def _pem(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_subject_keys() -> None:
    assert isinstance(subject_key_from_pem(_pem(ec.generate_private_key(ec.SECP384R1()))), ec.EllipticCurvePublicKey)
    assert isinstance(subject_key_from_pem(_pem(ed25519.Ed25519PrivateKey.generate())), ed25519.Ed25519PublicKey)
    with pytest.raises(InvalidCertificateRequest, match="RSA keys must have 2048"):
        subject_key_from_pem(_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))  # noqa: S505 - too short on purpose
    with pytest.raises(InvalidCertificateRequest, match="EC keys must be on P-256"):
        subject_key_from_pem(_pem(ec.generate_private_key(ec.SECP256K1())))
    with pytest.raises(InvalidCertificateRequest, match="not a PEM SubjectPublicKeyInfo"):
        subject_key_from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def _csr(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")]))
            .sign(key, hashes.SHA256()))


def test_csr_signature_must_verify() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = _csr(key)
    pem = csr.public_bytes(serialization.Encoding.PEM)
    der = csr.public_bytes(serialization.Encoding.DER)
    expected = key.public_key().public_numbers()
    assert subject_key_from_csr(pem).public_numbers() == expected  # type: ignore[union-attr]
    assert subject_key_from_csr(der).public_numbers() == expected  # type: ignore[union-attr]

    # one bit of the signature's s value flipped: still well-formed, but no proof of possession
    forged = bytearray(der)
    forged[-1] ^= 0x01
    with pytest.raises(InvalidCertificateRequest, match="the CSR signature does not verify"):
        subject_key_from_csr(bytes(forged))
    with pytest.raises(InvalidCertificateRequest, match="the CSR cannot be read"):
        subject_key_from_csr(b"not a CSR")
