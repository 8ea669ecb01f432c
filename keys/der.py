"""DER building blocks for the responses written byte by byte on hot paths (keys.ocsp, keys.tsa).

ITU-T X.690 (DER): a value is a tag, a definite length in its minimal form (section 8.1.3 and 10.1) and the
content. Only single-octet tags are written (universal and context-specific tags below 31, as OCSP and TSP
responses need). The callers encode the parts that carry meaning (integers, times, OIDs) with asn1crypto or
from constants, and assemble the constructed types around them here; their tests re-parse every response
with asn1crypto and openssl.
"""

from __future__ import annotations

from typing import Final

SEQUENCE: Final = 0x30
SET: Final = 0x31
OCTET_STRING: Final = 0x04


def length(size: int) -> bytes:
    """The definite length octets in minimal form: short below 128, else 0x80 | count and big-endian octets."""
    if size < 0x80:
        return bytes((size,))
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(encoded),)) + encoded


def tlv(tag: int, *parts: bytes) -> bytes:
    """One DER tag-length-value whose content is the concatenation of `parts`."""
    content = b"".join(parts)
    size = len(content)
    if size < 0x80:  # the common case on the hot paths, without a call
        return bytes((tag, size)) + content
    return bytes((tag,)) + length(size) + content
