"""Proof Key for Code Exchange, S256 only (RFC 7636; RFC 9700 section 2.1.1 requires it for every client)."""

from __future__ import annotations

import hashlib
import hmac
import re

from keys.jose import b64url

CODE_CHALLENGE_METHODS = ("S256",)
"""`plain` is refused: it protects nothing once the request is seen (RFC 9700 section 2.1.1)."""
_VERIFIER_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 section 4.1
_CHALLENGE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # BASE64URL(SHA256(verifier)): 32 bytes, no padding


def valid_challenge(challenge: str) -> bool:
    """An S256 challenge is the unpadded base64url of 32 bytes (RFC 7636 section 4.2)."""
    return bool(_CHALLENGE_RE.fullmatch(challenge))


def s256(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def verify(verifier: str, challenge: str) -> bool:
    """RFC 7636 section 4.6: BASE64URL-ENCODE(SHA256(ASCII(code_verifier))) == code_challenge."""
    if not _VERIFIER_RE.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)
