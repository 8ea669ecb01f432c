"""The token endpoint's form parser reads every body exactly as urllib's parse_qs (blank values kept, invalid UTF-8
refused) does, and names the field whose percent-escapes are not UTF-8."""

from __future__ import annotations

import random
from urllib.parse import parse_qs

import pytest

from api.web import NotUtf8, parse_form

CASES = ["", "a=1", "a=1&b=2&a=3", "a", "a=", "=x", "&&a=1&&", "a+b=c+d", "a%20b=%C5%9F%E2%82%AC", "x=%zz", "a=1=2",
         "grant_type=client_credentials&scope=api", "a=%2B%26", "redirect_uri=https%3A%2F%2Fx.az%2Fcb%3Fq%3D1",
         "a=\ufffd", "a=%EF%BF%BD"]
NOT_UTF8: dict[str, str | None] = {"%ff=1": None, "a%20b=%C5%9F%E2%82": "a b", "scope=openid%C0%AF": "scope",
            "a=1&client_id=a%ED%A0%80b": "client_id", "x=%F0&y=1": "x"}
"""Bodies with a percent-escape that is not UTF-8 (a lone byte, a cut sequence, an overlong form, an encoded
surrogate), and the field each names (None: the name itself)."""


def _parse_qs(text: str) -> dict[str, list[str]] | None:
    """urllib's reading, or None where a percent-escape is not UTF-8."""
    try:
        return parse_qs(text, keep_blank_values=True, max_num_fields=100, errors="strict")
    except UnicodeDecodeError:
        return None


@pytest.mark.parametrize("text", CASES)
def test_known_bodies_parse_as_parse_qs_does(text: str) -> None:
    assert parse_form(text) == _parse_qs(text)


@pytest.mark.parametrize(("text", "field"), NOT_UTF8.items())
def test_percent_escapes_that_are_not_utf8_are_refused(text: str, field: str | None) -> None:
    with pytest.raises(NotUtf8) as refused:
        parse_form(text)
    assert refused.value.field == field


def test_random_bodies_parse_as_parse_qs_does() -> None:
    rng = random.Random(20261127)  # noqa: S311 - fixed seed: the same 5,000 bodies every run
    refused = 0
    for _ in range(5000):
        text = "".join(rng.choice("ab=&%+2F0çş") for _ in range(rng.randint(0, 16)))
        expected = _parse_qs(text)
        if expected is None:
            refused += 1
            with pytest.raises(NotUtf8):
                parse_form(text)
        else:
            assert parse_form(text) == expected, text
    assert refused > 10  # "%F0" alone: the random bodies do reach the refusal


def test_more_than_the_field_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="too many"):
        parse_form("&".join(f"f{i}=1" for i in range(101)))
    assert len(parse_form("&".join(f"f{i}=1" for i in range(100)))) == 100
