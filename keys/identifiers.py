"""The format rules of Azerbaijan's national identifiers, in one place for the CA and the person registry.

- FIN (fərdi identifikasiya nömrəsi), the personal identification number on the identity card: seven
  characters, Latin capital letters and digits. Written in upper case; lower case input is accepted.
- VÖEN (vergi ödəyicisinin eyniləşdirmə nömrəsi), the taxpayer identification number: ten digits. Its structure
  is published by the State Tax Service in the OECD's "Information on Tax Identification Numbers: Azerbaijan"
  (Section II, TIN structure; https://www.oecd.org/tax/automatic-exchange/crs-implementation-and-assistance/
  tax-identification-numbers/Azerbaijan-TIN.pdf): digits 1-2 the territorial administrative unit, digits 3-8 a
  serial number, digit 9 computed "by a specific algorithm" of the tax service's software, digit 10 the legal
  status of the taxpayer, 1 for a legal person and 2 for a natural person (an individual entrepreneur). The
  algorithm of the ninth digit is not published, so it is not checked here: `check_voen` checks only what the
  source states (ten ASCII digits, the tenth 1 or 2), as python-stdnum's stdnum.az.voen does.

keys.profiles puts them into certificates (ETSI EN 319 412-1 "PNOAZ-<FIN>", "NTRAZ-<VÖEN>"); idp.sql.persons
registers persons by FIN (idp may import keys, never the reverse). Each caller turns `InvalidIdentifierFormat`
into its own error with its own wire form.
"""

from __future__ import annotations

import re
from typing import Final

_FIN_RE: Final = re.compile(r"[0-9A-Z]{7}")
_VOEN_RE: Final = re.compile(r"[0-9]{10}")


class InvalidIdentifierFormat(ValueError):
    """The value is not a well-formed FIN or VÖEN; the message says what the format is."""


def normalize_fin(value: str | None) -> str:
    """The FIN in upper case, or InvalidIdentifierFormat: exactly seven Latin letters or digits.

    Only ASCII is upper-cased: "ß".upper() is "SS" and would turn six characters into a seven-character FIN.
    """
    text = (value or "").strip()
    fin = text.upper() if text.isascii() else text
    if not _FIN_RE.fullmatch(fin):
        raise InvalidIdentifierFormat(
            f"FIN must be exactly 7 Latin letters or digits (got {value!r} of length {len(value or '')})")
    return fin


VOEN_LEGAL_PERSON: Final = "1"
"""The tenth digit of a legal person's VÖEN (OECD Azerbaijan TIN sheet, Section II)."""
VOEN_NATURAL_PERSON: Final = "2"
"""The tenth digit of a natural person's (individual entrepreneur's) VÖEN (the same source)."""


def normalize_voen(value: str | None) -> str:
    """The VÖEN, or InvalidIdentifierFormat: exactly ten digits (0-9 only, not other Unicode digits)."""
    voen = (value or "").strip()
    if not _VOEN_RE.fullmatch(voen):
        raise InvalidIdentifierFormat(f"VÖEN must be exactly 10 digits (got {value!r})")
    return voen


def check_voen(value: str | None) -> str:
    """The VÖEN under the registry's stricter rule, or InvalidIdentifierFormat: ten ASCII digits (normalize_voen)
    whose tenth digit, the taxpayer's legal status, is 1 (legal person) or 2 (natural person: an individual
    entrepreneur), per the State Tax Service's description in the OECD TIN sheet (module docstring). The ninth,
    computed digit is not checked: its algorithm is not published.

    normalize_voen stays the certificate profiles' format check (any ten digits), so that certificates and seals
    issued before this rule keep working."""
    voen = normalize_voen(value)
    if voen[9] not in (VOEN_LEGAL_PERSON, VOEN_NATURAL_PERSON):
        raise InvalidIdentifierFormat(
            f"VÖEN {voen}: the tenth digit (the taxpayer's legal status) must be 1 for a legal person or 2 for an "
            f"individual entrepreneur, not {voen[9]}")
    return voen


def voen_is_legal_person(voen: str) -> bool:
    """True when a checked VÖEN (check_voen) names a legal person (tenth digit 1), False for a natural person."""
    return voen[9] == VOEN_LEGAL_PERSON
