"""PAdES baseline levels (ETSI EN 319 142-1 section 6): what a signature carries beyond the CMS itself.

- B-B: the CAdES-detached signature (SubFilter ETSI.CAdES.detached) with signing-certificate-v2;
- B-T: plus a signature time-stamp (a proof that the signature existed at that time);
- B-LT: plus the validation data (certificates, OCSP responses, CRLs) in the document security store (DSS);
- B-LTA: plus a document time-stamp over all of it, so the validation data can be renewed for years.
"""

from __future__ import annotations

import enum
from typing import Final


class PadesLevel(enum.StrEnum):
    """The four baseline levels, in order: each includes everything of the one before."""

    B_B = "B-B"
    B_T = "B-T"
    B_LT = "B-LT"
    B_LTA = "B-LTA"

    @property
    def timestamped(self) -> bool:
        """A signature time-stamp is part of this level (B-T and above)."""
        return self is not PadesLevel.B_B

    @property
    def long_term(self) -> bool:
        """Validation data is embedded in the DSS (B-LT and above)."""
        return self in (PadesLevel.B_LT, PadesLevel.B_LTA)

    @property
    def archival(self) -> bool:
        """A document time-stamp closes the document (B-LTA)."""
        return self is PadesLevel.B_LTA


DEFAULT_LEVEL: Final = PadesLevel.B_LT
"""Issue 13: a signing request without a level is signed B-LT."""
