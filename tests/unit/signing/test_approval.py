"""The approval challenge (signing.core.approval): bound to the request id and every document digest, in order, and
checked against an assertion's clientDataJSON."""

from __future__ import annotations

import base64
import hashlib
import json
import struct

import pytest

from signing.core.approval import (
    DOMAIN,
    ChallengeMismatch,
    InvalidApprovalInput,
    check_client_data,
    derive_challenge,
)

D1 = hashlib.sha256(b"first document").hexdigest()
D2 = hashlib.sha256(b"second document").hexdigest()
D3 = hashlib.sha256(b"third document").hexdigest()


def client_data(challenge: bytes | str, **extra: object) -> bytes:
    value = challenge if isinstance(challenge, str) else base64.urlsafe_b64encode(challenge).rstrip(b"=").decode()
    return json.dumps({"type": "webauthn.get", "challenge": value, "origin": "https://acar.example",
                       "crossOrigin": False, **extra}).encode()


def test_the_challenge_is_sha256_of_the_length_prefixed_encoding() -> None:
    """The documented encoding, computed independently here."""
    rid = b"req-123"
    expected = hashlib.sha256(struct.pack(">I", len(DOMAIN)) + DOMAIN + struct.pack(">I", len(rid)) + rid
                              + struct.pack(">I", 2) + bytes.fromhex(D1) + bytes.fromhex(D2)).digest()
    challenge = derive_challenge("req-123", [D1, D2])
    assert challenge.value == expected and len(challenge.value) == 32
    assert challenge.digests == (D1, D2) and challenge.request_id == "req-123"
    assert base64.urlsafe_b64decode(challenge.base64url + "=") == expected and "=" not in challenge.base64url


def test_deterministic() -> None:
    assert derive_challenge("r1", [D1, D2]).value == derive_challenge("r1", [D1, D2]).value


@pytest.mark.parametrize(("request_id", "digests"), [
    ("r1", [D2, D1]),                                   # another order
    ("r1", [D1, hashlib.sha256(b"changed").hexdigest()]),  # a changed document
    ("r2", [D1, D2]),                                   # another request
    ("r1", [D1]),                                       # a document removed
    ("r1", [D1, D2, D3]),                               # a document added
    ("r1", [D1, D1]),                                   # a document twice instead of two
])
def test_anything_else_gives_another_challenge(request_id: str, digests: list[str]) -> None:
    assert derive_challenge(request_id, digests).value != derive_challenge("r1", [D1, D2]).value


def test_the_encoding_is_injective_across_the_id_and_digest_boundary() -> None:
    """Without the length prefixes, an id ending in a digest's bytes could collide with a shorter id and one more
    document; with them it cannot."""
    raw = bytes.fromhex(D1)
    glued = "r" + raw.hex()
    assert derive_challenge(glued, [D2]).value != derive_challenge("r", [D1, D2]).value


@pytest.mark.parametrize(("request_id", "digests"), [
    ("", [D1]), ("x" * 201, [D1]), ("r", []), ("r", [D1.upper()]), ("r", [D1[:-2]]), ("r", ["g" * 64]),
])
def test_refuses_what_no_request_can_be(request_id: str, digests: list[str]) -> None:
    with pytest.raises(InvalidApprovalInput):
        derive_challenge(request_id, digests)


def test_check_accepts_the_derived_challenge() -> None:
    challenge = derive_challenge("r1", [D1, D2])
    check_client_data(client_data(challenge.value), challenge)
    check_client_data(client_data(challenge.base64url), challenge)


@pytest.mark.parametrize("other", [
    derive_challenge("r2", [D1, D2]).value,
    derive_challenge("r1", [D2, D1]).value,
    b"\x00" * 32,
    derive_challenge("r1", [D1, D2]).value[:16],
])
def test_check_refuses_another_challenge(other: bytes) -> None:
    with pytest.raises(ChallengeMismatch) as caught:
        check_client_data(client_data(other), derive_challenge("r1", [D1, D2]))
    assert caught.value.code == "approval_challenge_mismatch" and caught.value.status_code == 400


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"type": "webauthn.get"}', b'{"challenge": 12}', b'{"challenge": "!!!!"}',
    b'{"challenge": "' + b"A" * 200 + b'"}', b"\xff\xfe", b"{" + b" " * 5000 + b"}",
    b"[" * 4000,  # nested past the recursion limit (json.loads' RecursionError; once a 500)
])
def test_check_refuses_unreadable_client_data(body: bytes) -> None:
    with pytest.raises(ChallengeMismatch):
        check_client_data(body, derive_challenge("r1", [D1]))
