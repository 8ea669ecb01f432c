"""signing.core.fastpaths answers exactly as the libraries' own code: the same string objects or the same errors,
the stream left at the same place; names equal or not as RFC 5280 section 7.1 says."""

from __future__ import annotations

import io
import random

import pytest
from asn1crypto import x509
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.misc import PdfReadError

from signing.core import fastpaths

pytestmark = pytest.mark.nodb  # no database: run once, in the SQLite pass (Makefile)

WHITESPACE = b" \n\r\t\f\x00"


def _both(data: bytes) -> tuple[object, object]:
    """(result or error type, position) from the original and from the fast path, reading `data` + a tail."""
    answers = []
    for read in (fastpaths.original_read_hex_string, fastpaths.read_hex_string):
        stream = io.BytesIO(b"garbage " + data + b" /Tail")
        stream.seek(len(b"garbage "))
        try:
            value = read(stream)
            answers.append((type(value).__name__, bytes(value.original_bytes), stream.tell()))
        except PdfReadError as exc:
            answers.append((type(exc).__name__, None, None))
    return answers[0], answers[1]


def _cases() -> list[bytes]:
    rnd = random.Random(14)  # noqa: S311 - reproducible test inputs, not secrets
    cases = [b"<>", b"<0>", b"<ABC>", b"<ab cd\nef>", b"<  >", b"<4142%comment\n43>", b"<41g2>", b"<4142",
             b"<41 42 4", b"<" + b"0" * 70_000 + b">", b"<" + b"a1 " * 40_000 + b"f>", b"<FEFF0041>"]
    for _ in range(300):
        length = rnd.randrange(0, 200)
        body = bytearray()
        for _ in range(length):
            kind = rnd.random()
            if kind < 0.8:
                body += rnd.choice(b"0123456789abcdefABCDEF").to_bytes(1, "big")
            elif kind < 0.97:
                body += rnd.choice(WHITESPACE).to_bytes(1, "big")
            else:
                body += rnd.choice(b"%gz<(").to_bytes(1, "big")
        cases.append(b"<" + bytes(body) + (b">" if rnd.random() < 0.95 else b""))
    return cases


@pytest.mark.parametrize("data", _cases(), ids=lambda d: repr(d[:24]))
def test_hex_strings_read_as_pyhanko_reads_them(data: bytes) -> None:
    original, fast = _both(data)
    assert fast == original


def test_installed_for_the_reader_and_uninstalled() -> None:
    assert generic.read_hex_string_from_stream is fastpaths.read_hex_string  # signing.core.inspect installed it
    fastpaths.uninstall()
    try:
        assert generic.read_hex_string_from_stream is fastpaths.original_read_hex_string
    finally:
        fastpaths.install()
    assert generic.read_hex_string_from_stream is fastpaths.read_hex_string


def _name(**attributes: str) -> x509.Name:
    return x509.Name.build(attributes)


@pytest.mark.parametrize(("a", "b", "equal"), [
    (_name(common_name="Açar Test CA", country_name="AZ"), _name(common_name="Açar Test CA", country_name="AZ"), True),
    # RFC 5280 7.1 / RFC 4518: case and inner spaces are folded, different DER, still equal (the full comparison)
    (_name(common_name="Açar  Test CA"), _name(common_name="açar test ca"), True),
    (_name(common_name="Açar Test CA"), _name(common_name="Açar Test CA 2"), False),
    (_name(common_name="Açar Test CA"), _name(common_name="Açar Test CA", country_name="AZ"), False),
])
def test_name_equality_as_rfc_5280(a: x509.Name, b: x509.Name, equal: bool) -> None:
    assert (a == b) is equal and (a != b) is not equal
    fastpaths.uninstall()
    try:
        assert (a == b) is equal
    finally:
        fastpaths.install()
