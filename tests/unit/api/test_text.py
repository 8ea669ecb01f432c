"""api.text: which text storage and JSON cannot hold (NUL, unpaired surrogates, noncharacters) and which is fine."""

from __future__ import annotations

import pytest

from api.text import refusal, refused_basic, refused_json, refused_param


@pytest.mark.parametrize("value", ["a\x00", "\x00", "plain ascii\x00 then more", "\ud800", "x\udfff", "\ufdd0",
                                   "\ufffe", "\uffff", "\U0001fffe", "\U0010ffff"])
def test_refused(value: str) -> None:
    assert refusal(value) is not None


@pytest.mark.parametrize("value", ["", "plain ascii", "\x7f\x01", "Məmmədova", "Ağayev Əli", "Иван", "\ufffd",
                                   "\U0001f600", "tab\there", "\ufdcf", "\ufdf0", "\U0010fffd"])
def test_accepted(value: str) -> None:
    assert refusal(value) is None


def test_where_it_was_found() -> None:
    assert refused_param({"scope": ["openid"], "state": ["a", "b\x00"]}) == ("state", "contains U+0000 (NUL)")
    assert refused_param({"\ud800": ["x"]}) == ("a parameter name", "contains an unpaired surrogate")
    assert refused_json({"keys": [{"kid": "ok"}, {"kid": "\ud800"}]}) == (("keys", 1, "kid"),
                                                                           "contains an unpaired surrogate")
    assert refused_json({"a\x00": 1}) is not None and refused_json({"n": 1, "b": [True, None]}) is None
    assert refused_basic("Basic YSUwMGI6Yw==") == "a Basic credential contains U+0000 (NUL)"  # "a%00b:c"
    assert refused_basic("Basic not base64!") is None and refused_basic("Bearer x") is None
