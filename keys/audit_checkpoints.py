"""Checkpoints of the audit trail's hash chain (storage.audit_chain) signed with the token-signing keys.

A checkpoint is a compact JWS (RFC 7515) over the chain head: chain, checkpoint number, seq, chain_hash, the previous
checkpoint's hash and its own, with `iss` (this issuer) and `iat` (RFC 7519 section 4.1.6: the time it was signed).
Security decisions, spelled out (STYLE habit 7):
- algorithm: the token keys' ES256 (else EdDSA, else RS256: what ACAR_TOKEN_KEY_ALGORITHMS has); typ
  `acar-audit-checkpoint+jwt` (no access token or ID token verifies as a checkpoint, RFC 8725 section 3.11),
  issuer required, no `exp`: a checkpoint stays evidence for as long as its key is published;
- the signature goes through the key's handle (`KeyHandle.sign`, keys.jose.JwsSigner), like every signature;
- a checkpoint whose key has since been removed (rotation) cannot be checked any more: the verifier then relies on
  the hash chain up to a later checkpoint, whose key is still published (storage.audit_chain.verify).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from keys.errors import InvalidToken
from keys.jose import JwsVerifier
from keys.token_keys import TokenKeyService
from storage.audit_chain import CHECKPOINT_TYP, CheckpointSignatureError

CHECKPOINT_ALGORITHMS = ("ES256", "EdDSA", "RS256")
"""Algorithms a checkpoint may be signed with; the first of them the token keys have signs (ES256 by default)."""
CHECKPOINT_LEEWAY_SECONDS = 60
"""How far in the future a checkpoint's iat may be (clock skew between nodes)."""


class TokenKeyCheckpoints:
    """storage.audit_chain.CheckpointSigner on the current ES256 token key."""

    def __init__(self, token_keys: TokenKeyService, *, issuer: str) -> None:
        self._keys = token_keys
        self._issuer = issuer
        self._verifier: JwsVerifier | None = None

    async def sign(self, claims: Mapping[str, Any]) -> tuple[str, str]:
        alg = next(a for a in CHECKPOINT_ALGORITHMS if a in self._keys.algorithms)
        signer = await self._keys.signer(alg)
        token = await signer.sign({**claims, "iss": self._issuer, "iat": int(time.time())}, typ=CHECKPOINT_TYP)
        return signer.kid, token

    async def verify(self, token: str) -> Mapping[str, Any]:
        verifier = self._verifier
        if verifier is None:  # the published keys read once per instance (one verification run)
            snapshot = await self._keys.refresh()
            verifier = self._verifier = JwsVerifier(
                snapshot.resolve, algorithms=list(CHECKPOINT_ALGORITHMS), issuer=self._issuer, audience=None,
                typ=CHECKPOINT_TYP, leeway=CHECKPOINT_LEEWAY_SECONDS, required=("iss", "iat"))
        try:
            verified = verifier.verify(token)
        except InvalidToken as exc:
            raise CheckpointSignatureError(str(exc), unknown_key=str(exc) == "unknown signing key") from None
        if verified["iat"] > time.time() + CHECKPOINT_LEEWAY_SECONDS:
            raise CheckpointSignatureError("signed in the future")
        return verified.claims
