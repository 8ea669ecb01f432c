"""The signing API's base64 decoding in slices (api.routes.signing._b64decode) against base64.b64decode(validate=True)
on random texts, valid and mangled, with a slice small enough that every text spans several."""

from __future__ import annotations

import base64
import binascii
import random

import pytest

from api.routes import signing


def _outcome(decode: object, text: str) -> bytes | None:
    try:
        return decode(text)  # type: ignore[operator,no-any-return]
    except (binascii.Error, ValueError):
        return None


def test_sliced_decoding_accepts_and_refuses_exactly_what_b64decode_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing, "_BASE64_SLICE", 8)
    rng = random.Random(13)  # noqa: S311 - test data, not a secret
    texts = ["", "QQ==", "QQ==QQ==", "QUJDRA", "QU JD", "QUJD\n", "Q===", "====", "QUJD=QUJD", "QQ=", "Çay="]
    for _ in range(5000):
        text = base64.b64encode(rng.randbytes(rng.randrange(0, 48))).decode()
        if text and rng.random() < 0.5:
            at = rng.randrange(len(text))
            text = text[:at] + rng.choice("A=/+ \n.-_é") + text[at + 1:]
        texts.append(text)
    for text in texts:
        assert _outcome(signing._b64decode, text) == _outcome(lambda t: base64.b64decode(t, validate=True), text), text
