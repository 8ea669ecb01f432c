"""The format rules of Azerbaijan's national identifiers, in one place for the CA and the person registry.

- FIN (fərdi identifikasiya nömrəsi), the personal identification number on the identity card: seven
  characters, Latin capital letters and digits. Written in upper case; lower case input is accepted.
- VÖEN (vergi ödəyicisinin eyniləşdirmə nömrəsi), the taxpayer identification number: ten digits.

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


def normalize_voen(value: str | None) -> str:
    """The VÖEN, or InvalidIdentifierFormat: exactly ten digits (0-9 only, not other Unicode digits)."""
    voen = (value or "").strip()
    if not _VOEN_RE.fullmatch(voen):
        raise InvalidIdentifierFormat(f"VÖEN must be exactly 10 digits (got {value!r})")
    return voen
