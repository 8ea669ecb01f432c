"""The admin API (bearer admin tokens, RFC 9457 problems): minting admin tokens (machine tokens only), revoking
them and revoking certificates (acar:admin / acar:cert:revoke, or a system administrator's token: api.auth)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from api.auth import (
    ADMIN_SCOPE,
    ADMIN_SCOPES,
    CERTIFICATES,
    DELEGABLE_SCOPES,
    MINT_SCOPE,
    TOKEN_REVOCATION,
    AdminPrincipal,
    mint_admin_token,
    record_mint,
    require_permission,
    require_scope,
    revoke_admin_token,
)
from api.deps import Services
from api.errors import ApiProblem
from api.logging import request_id_var
from api.schemas.admin import TokenMintRequest, TokenMintResponse
from api.schemas.pki import CertificateView, RevokeRequest
from storage.base import utcnow

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/tokens", response_model=TokenMintResponse)
async def mint_token(
    body: TokenMintRequest, request: Request, principal: Annotated[AdminPrincipal, Depends(require_scope(MINT_SCOPE))]
) -> TokenMintResponse:
    """Mint a narrower, short-lived admin token (for example one that may only revoke certificates).

    Only operational scopes can be delegated (never acar:admin or acar:token:mint), never a scope the caller
    lacks, and never for longer than the caller's own token lives; the minter is recorded in `act`.
    """
    services: Services = request.app.state.services
    scopes = set(body.scope.split())
    undelegable = scopes - DELEGABLE_SCOPES
    if undelegable & ADMIN_SCOPES:
        raise ApiProblem(403, "insufficient_scope", "Insufficient scope",
                         f"{', '.join(sorted(undelegable & ADMIN_SCOPES))} can only be minted with `acar admin token`")
    if ADMIN_SCOPE not in principal.scopes and not scopes <= principal.scopes:
        raise ApiProblem(403, "insufficient_scope", "Insufficient scope", "a token cannot grant scopes it lacks")
    remaining = int(principal.claims["exp"]) - int(time.time())
    if body.ttl_seconds > remaining:
        raise ApiProblem(422, "invalid_request", "Invalid request",
                         f"ttl_seconds must not exceed the lifetime left to your own token ({max(remaining, 0)} s)")
    try:
        minted = await mint_admin_token(services, subject=body.subject, scopes=scopes, ttl_seconds=body.ttl_seconds,
                                        actor=(principal.subject, str(principal.claims["jti"])))
    except ValueError as exc:
        raise ApiProblem(422, "invalid_request", "Invalid request", str(exc)) from None
    async with services.sessions() as session, session.begin():
        record_mint(session, minted, actor=principal.subject, subject=body.subject, ttl=body.ttl_seconds,
                    request_id=request_id_var.get(), minter_jti=principal.claims.claims.get("jti"))
    return TokenMintResponse.model_validate(minted)


@router.post("/tokens/{jti}/revoke", status_code=204)
async def revoke_token(
    jti: str, request: Request, principal: Annotated[AdminPrincipal, Depends(require_permission(TOKEN_REVOCATION))]
) -> Response:
    """Revoke an admin token by its jti (from the audit trail or the mint response): 204 every time.

    Idempotent, as token revocation is in RFC 7009 section 2.2 ("The authorization server responds with HTTP
    status code 200 if the token has been revoked successfully or if the client submitted an invalid token"):
    a jti already revoked, or never issued (it is then refused should it ever appear), answers the same, so a
    retried request and a concurrent one cannot fail, and the answer tells nothing about which jtis exist. The
    audit trail records the first revocation only."""
    services: Services = request.app.state.services
    async with services.sessions() as session, session.begin():
        await revoke_admin_token(session, jti, reason="revoked through the admin API",
                                 actor=principal.subject if principal.person_id is None else principal.actor)
    return Response(status_code=204)


@router.post("/certificates/{serial}/revoke", response_model=CertificateView)
async def revoke_certificate(
    serial: str, body: RevokeRequest, request: Request,
    principal: Annotated[AdminPrincipal, Depends(require_permission(CERTIFICATES))],
) -> CertificateView:
    """Revoke a certificate (serial in hex; RFC 5280 section 5.3.1 reason) and publish the new CRL.

    404 for a serial we never issued, 409 when it is already revoked, 422 for an unknown reason.
    """
    services: Services = request.app.state.services
    async with services.sessions() as session, session.begin():
        row = await services.pki.revoke(session, serial, body.reason, actor=principal.actor)
    return CertificateView.from_row(row, utcnow())
