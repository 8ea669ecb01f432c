"""What a validation trusts (issue 14 "Trust"): trust anchors and, optionally, an ETSI TS 119 612 trusted list.

- Trust anchors (RFC 5280 section 6.1.1 (d)): the built-in CA's root by default, and extra anchors from files.
- A trusted list (ETSI TS 119 612): its services' certificates become anchors too, and it says which of them
  issue qualified certificates (ETSI TS 119 612 section 5.5.1 service type CA/QC, status "granted"), so the
  qualified status can be read from a national list rather than only from the certificate's own qcStatements
  (ETSI EN 319 412-5). Its XML signature is checked against configured certificates before any of it is used
  (`signing.core.trustlist`).

No permissive default (STYLE habit 9): a `TrustPolicy` needs at least one anchor.

Which certificates may be anchors (`load_anchors`). RFC 5280 section 6.1.1 (d) takes from a trust anchor only its
name and public key, as the issuer of the first certificate of a path; section 6.2 leaves the choice of anchors to
the relying party. Açar accepts a certificate file's certificate as an anchor when it is a CA certificate
(basicConstraints cA TRUE, section 4.2.1.9, whose key may sign certificates) or a self-signed certificate (a
directly trusted end entity, e.g. a producer's self-signed signing certificate pinned on purpose: its own path is
itself). An end-entity certificate issued by someone else is refused with a ValueError: its key does not sign
certificates (section 4.2.1.3), so as an anchor it would anchor nothing but itself, and such a file is almost
always a mistake (the signer's certificate given instead of its root), which fails closed at start-up rather than
leaving every signature of that CA without a path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from asn1crypto import pem, x509
from cryptography import x509 as cx509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from signing.core.report import Qualification


class TrustedListView(Protocol):
    """A trusted list whose signature was checked (`signing.core.trustlist.TrustedList` is one)."""

    @property
    def description(self) -> str:
        """E.g. "trusted list AZ #12 (issued 2026-11-01)", for the report's trust sources."""

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        """The certificates of the list's CA services (any status), to build paths to."""

    @property
    def next_update(self) -> dt.datetime:
        """The list's NextUpdate (ETSI TS 119 612 section 5.3.15): until then it is current."""

    def qualification(self, path: Sequence[x509.Certificate], at: dt.datetime) -> Qualification | None:
        """The qualified status of `path[0]` (the signer's certificate; `path` ends in one of `anchors`) at `at`
        as the list says (ETSI TS 119 615 procedure), or None when no service of the list issued it."""


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """Anchors with the name of where each came from, and the trusted list if one is configured."""

    anchors: tuple[x509.Certificate, ...]
    sources: tuple[str, ...]
    trusted_list: TrustedListView | None = field(default=None)

    def __post_init__(self) -> None:
        if not self.anchors and self.trusted_list is None:
            raise ValueError("a trust policy needs at least one trust anchor or a trusted list")

    @property
    def all_anchors(self) -> tuple[x509.Certificate, ...]:
        """The configured anchors and the trusted list's, without duplicates."""
        seen: set[bytes] = set()
        out: list[x509.Certificate] = []
        extra = self.trusted_list.anchors if self.trusted_list is not None else ()
        for cert in (*self.anchors, *extra):
            if cert.sha256 not in seen:
                seen.add(cert.sha256)
                out.append(cert)
        return tuple(out)


def load_anchors(paths: Sequence[Path]) -> list[tuple[x509.Certificate, str]]:
    """The certificates of `paths` as trust anchors, each with its source (the file's name) for the report's
    `trust_sources`.

    A file holds one DER certificate, or PEM with one or more "CERTIFICATE" blocks (a bundle; text outside the
    blocks is ignored, as openssl does). Which certificates may be anchors: see the module docstring (RFC 5280
    section 6.1.1 (d)). Raises ValueError naming the file when it cannot be read, is empty, holds no certificate,
    holds a PEM block of another type or a certificate that does not parse, or holds an end-entity certificate
    that is not self-signed.
    """
    return [(_anchor_certificate(der, path), path.name) for path in paths for der in _certificate_ders(path)]


def load_certificates(paths: Sequence[Path]) -> list[tuple[x509.Certificate, str]]:
    """Every certificate of `paths` (DER, or a PEM bundle, as `load_anchors` reads them) with its file's name, with
    no rule on which may be anchors: a trusted list's signer certificates (ETSI TS 119 612 section 5.7.1), which
    may be end-entity certificates of a CA. ValueError naming the file as `load_anchors`."""
    return [(_parsed_certificate(der, path), path.name) for path in paths for der in _certificate_ders(path)]


def _parsed_certificate(der: bytes, path: Path) -> x509.Certificate:
    # cryptography parses strictly (asn1crypto parses lazily, so a broken certificate would surface later)
    try:
        cx509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise ValueError(f"certificate file {path}: not an X.509 certificate in PEM or DER ({exc})") from exc
    return x509.Certificate.load(der)


def _certificate_ders(path: Path) -> list[bytes]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"trust anchor file {path}: cannot be read ({exc.strerror or exc})") from exc
    if not data.strip():
        raise ValueError(f"trust anchor file {path}: is empty")
    if not pem.detect(data):
        return [data]
    try:
        blocks = [(type_name, der) for type_name, _headers, der in pem.unarmor(data, multiple=True)]
    except ValueError as exc:  # also binascii.Error: bad base64 inside a block
        raise ValueError(f"trust anchor file {path}: malformed PEM ({exc})") from exc
    for type_name, _der in blocks:
        if type_name != "CERTIFICATE":
            raise ValueError(f"trust anchor file {path}: holds a PEM {type_name} block, not a CERTIFICATE")
    ders = [der for _type_name, der in blocks]
    if not ders:
        raise ValueError(f"trust anchor file {path}: holds no certificate")
    return ders


def _anchor_certificate(der: bytes, path: Path) -> x509.Certificate:
    # cryptography parses strictly (asn1crypto parses lazily, so a broken certificate would surface later)
    try:
        parsed = cx509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise ValueError(f"trust anchor file {path}: not an X.509 certificate in PEM or DER ({exc})") from exc
    try:
        is_ca = parsed.extensions.get_extension_for_class(cx509.BasicConstraints).value.ca
    except cx509.ExtensionNotFound:
        is_ca = False
    if not is_ca and not _self_signed(parsed):
        raise ValueError(
            f"trust anchor file {path}: {parsed.subject.rfc4514_string()} is an end-entity certificate issued by "
            f"{parsed.issuer.rfc4514_string()}; give the CA certificate (RFC 5280 section 6.1.1 (d)) or a "
            "self-signed certificate")
    return x509.Certificate.load(der)


def _self_signed(cert: cx509.Certificate) -> bool:
    """Issuer equals subject and the certificate's own key verifies its signature (RFC 5280 section 6.1: a
    self-signed certificate)."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True
