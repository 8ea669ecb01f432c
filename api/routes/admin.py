"""The admin API (bearer admin tokens, RFC 9457 problems)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.auth import AdminPrincipal, mint_admin_token, require_scope
from api.deps import Services
from api.problems import ApiProblem
from api.schemas.admin import TokenMintRequest, TokenMintResponse
from api.schemas.pki import CertificateView, RevokeRequest
from storage.audit import record_event
from storage.base import utcnow

router = APIRouter(prefix="/admin", tags=["admin"])
MINT = "acar:token:mint"
REVOKE = "acar:cert:revoke"


@router.post("/tokens", response_model=TokenMintResponse)
async def mint_token(
    body: TokenMintRequest, request: Request, principal: Annotated[AdminPrincipal, Depends(require_scope(MINT))]
) -> TokenMintResponse:
    """Mint a narrower, short-lived admin token (for example one that may only revoke certificates)."""
    services: Services = request.app.state.services
    scopes = set(body.scope.split())
    if "acar:admin" not in principal.scopes and not scopes <= principal.scopes:
        raise ApiProblem(403, "insufficient_scope", "Insufficient scope", "a token cannot grant scopes it lacks")
    try:
        minted = await mint_admin_token(services, subject=body.subject, scopes=scopes, ttl_seconds=body.ttl_seconds)
    except ValueError as exc:
        raise ApiProblem(422, "invalid_request", "Invalid request", str(exc)) from None
    async with services.sessions() as session, session.begin():
        record_event(session, "admin_token.minted", actor=principal.subject, subject=body.subject,
                     detail={"scope": minted["scope"], "ttl": body.ttl_seconds, "kid": minted["kid"]})
    return TokenMintResponse.model_validate(minted)


@router.post("/certificates/{serial}/revoke", response_model=CertificateView)
async def revoke_certificate(
    serial: str, body: RevokeRequest, request: Request,
    principal: Annotated[AdminPrincipal, Depends(require_scope(REVOKE))],
) -> CertificateView:
    """Revoke a certificate (serial in hex; RFC 5280 section 5.3.1 reason) and publish the new CRL.

    404 for a serial we never issued, 409 when it is already revoked, 422 for an unknown reason.
    """
    services: Services = request.app.state.services
    async with services.sessions() as session, session.begin():
        row = await services.pki.revoke(session, serial, body.reason, actor=f"admin:{principal.subject}")
    return CertificateView.from_row(row, utcnow())
