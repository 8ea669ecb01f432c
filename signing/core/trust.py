"""What a validation trusts (issue 14 "Trust"): trust anchors and, optionally, an ETSI TS 119 612 trusted list.

- Trust anchors (RFC 5280 section 6.1.1 (d)): the built-in CA's root by default, and extra anchors from files.
- A trusted list (ETSI TS 119 612): its services' certificates become anchors too, and it says which of them
  issue qualified certificates (ETSI TS 119 612 section 5.5.1 service type CA/QC, status "granted"), so the
  qualified status can be read from a national list rather than only from the certificate's own qcStatements
  (ETSI EN 319 412-5). Its XML signature is checked against configured certificates before any of it is used
  (`signing.core.trustlist`).

No permissive default (STYLE habit 9): a `TrustPolicy` needs at least one anchor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from asn1crypto import x509

from signing.core.report import Qualification


class TrustedListView(Protocol):
    """A trusted list whose signature was checked (`signing.core.trustlist.TrustedList` is one)."""

    @property
    def description(self) -> str:
        """E.g. "trusted list AZ #12 (issued 2026-11-01)", for the report's trust sources."""

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        """The certificates of the list's CA services (any status), to build paths to."""

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
