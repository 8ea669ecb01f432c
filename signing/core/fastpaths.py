"""Two faster, equivalent code paths for the pinned pyHanko 0.38 / asn1crypto 1.5.1, installed by `install()`.

Issue 14 asks for 10 validations of a 200 KB B-LTA document per second per core. Profiled (cProfile, bench/
bench_validation.py's document), two library hot spots cost about a third of a validation and have obvious
equivalent fast paths:

1. `pyhanko.pdf_utils.generic.read_hex_string_from_stream` reads a hex string (ISO 32000-2 section 7.3.4.3) one
   byte per Python call: a signature's /Contents is 16-32 KiB of hex, read twice or more per validation. The fast
   path reads the string up to its ">" in blocks, drops the PDF whitespace (section 7.2.3) and decodes it with
   `binascii.unhexlify`, padding an odd final digit with 0 (section 7.3.4.3). Anything it is not sure of (a "%"
   comment inside the string, a character that is not a hex digit or whitespace, the end of the stream before ">")
   rewinds and hands the string to pyHanko's own reader, which then answers exactly as before (its errors included).
2. `asn1crypto.x509.RDNSequence.__eq__` (RFC 5280 section 7.1 name comparison) prepares every attribute value with
   LDAP string preparation (RFC 4518) on each comparison. Two names with identical DER encodings are equal under
   any comparison rule, so the fast path answers True for byte-identical names before the full comparison; every
   other pair still takes the full RFC 5280 comparison.

Both are checked against the originals in tests/unit/signing/test_fastpaths.py. The pins in constraints.txt keep the
patched functions' behaviour fixed; `install()` patches no version it was not written for.
"""

from __future__ import annotations

import binascii
import io
import warnings
from collections.abc import Callable
from typing import Any, BinaryIO, Final

import asn1crypto
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils import generic
from pyhanko.version import __version__ as pyhanko_version

__all__ = ["install", "original_read_hex_string", "read_hex_string", "uninstall"]

_PYHANKO: Final = "0.38.0"
_ASN1CRYPTO: Final = "1.5.1"
_BLOCK: Final = 64 * 1024
_WHITESPACE: Final = b" \n\r\t\f\x00"
"""ISO 32000-2 section 7.2.3 table 1 (what pyHanko's read_non_whitespace skips)."""
_HEX_DIGITS: Final = b"0123456789abcdefABCDEF"

original_read_hex_string: Final[Callable[[BinaryIO], Any]] = generic.read_hex_string_from_stream
_original_rdn_eq: Final = asn1_x509.RDNSequence.__eq__


def read_hex_string(stream: BinaryIO) -> Any:
    """pyHanko's `read_hex_string_from_stream`, read in blocks (see the module docstring): the same string object,
    the stream left just after the closing ">"; whatever this path is unsure of goes to pyHanko's own reader."""
    start = stream.tell()
    stream.read(1)  # the "<"
    chunks: list[bytes] = []
    while True:
        block = stream.read(_BLOCK)
        if not block:  # no ">" before the end: pyHanko's reader raises its own error
            stream.seek(start)
            return original_read_hex_string(stream)
        end = block.find(b">")
        if end < 0:
            chunks.append(block)
            continue
        chunks.append(block[:end])
        stream.seek(end + 1 - len(block), io.SEEK_CUR)
        break
    digits = b"".join(chunks).translate(None, _WHITESPACE)
    if b"%" in digits or digits.translate(None, _HEX_DIGITS):
        stream.seek(start)
        return original_read_hex_string(stream)
    if len(digits) % 2:
        digits += b"0"
    return generic.pdf_string(binascii.unhexlify(digits))


def _rdn_sequence_eq(self: asn1_x509.RDNSequence, other: object) -> bool:
    if isinstance(other, asn1_x509.RDNSequence) and self.dump() == other.dump():
        return True
    result: bool = _original_rdn_eq(self, other)
    return result


def install() -> None:
    """Install both fast paths (idempotent). With library versions they were not written for nothing is patched
    (the libraries' own code is correct, only slower) and a RuntimeWarning says so: the test suite turns warnings
    into errors, so a version bump fails CI until the fast paths are checked against it (constraints.txt)."""
    if pyhanko_version != _PYHANKO or asn1crypto.__version__ != _ASN1CRYPTO:
        warnings.warn(f"signing.core.fastpaths was written for pyHanko {_PYHANKO} and asn1crypto {_ASN1CRYPTO}, not "
                      f"{pyhanko_version} and {asn1crypto.__version__}: not installed; re-check them against the new "
                      "versions", RuntimeWarning, stacklevel=2)
        return
    generic.read_hex_string_from_stream = read_hex_string
    asn1_x509.RDNSequence.__eq__ = _rdn_sequence_eq


def uninstall() -> None:
    """Put the libraries' own functions back (bench/bench_validation.py measures its reference without the fast
    paths; the tests compare the two)."""
    generic.read_hex_string_from_stream = original_read_hex_string  # type: ignore[assignment]  # the same function
    asn1_x509.RDNSequence.__eq__ = _original_rdn_eq
